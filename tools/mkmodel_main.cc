// shift-mkmodel: writes a random-weight Llama-family model in the Hugging Face
// layout, with a byte-level BPE tokenizer trained on a text.
#include <cstdio>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "common/file_util.h"
#include "tools/mkmodel.h"

ABSL_FLAG(std::string, out, "", "Directory to write the model into (required; created if missing)");
ABSL_FLAG(std::string, preset, "tiny",
          "Shape preset: tiny, tiny-qwen3, tiny-mistral, llama3-8b, llama3-70b, qwen2-32b, "
          "qwen3-32b, mistral-7b");
ABSL_FLAG(std::string, architecture, "",
          "Override: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or MistralForCausalLM");
ABSL_FLAG(int64_t, hidden_size, 0, "Override: model width (0 keeps the preset's)");
ABSL_FLAG(int64_t, intermediate_size, 0, "Override: MLP width");
ABSL_FLAG(int64_t, num_layers, 0, "Override: transformer layers");
ABSL_FLAG(int64_t, num_heads, 0, "Override: query heads");
ABSL_FLAG(int64_t, num_kv_heads, 0, "Override: key/value heads (GQA)");
ABSL_FLAG(int64_t, head_dim, 0, "Override: per-head dimension");
ABSL_FLAG(int64_t, vocab_size, 0, "Override: embedding rows (>= the tokenizer's size pads)");
ABSL_FLAG(int64_t, max_position_embeddings, 0, "Override: context length");
ABSL_FLAG(double, rope_theta, 0, "Override: RoPE base");
ABSL_FLAG(std::string, tie_word_embeddings, "", "Override: true or false");
ABSL_FLAG(std::string, attention_bias, "", "Override: true or false (q/k/v biases)");
ABSL_FLAG(int64_t, sliding_window, -1,
          "Override: sliding-window attention over this many positions, every layer (Mistral) "
          "or from the first layer on (Qwen); 0 for none (-1 keeps the preset's)");
ABSL_FLAG(std::string, dtype, "bf16",
          "Weight dtype: bf16, fp32, or fp8 (FP8 E4M3 projections with per-channel scales in the "
          "compressed-tensors layout, or block scales with --fp8_block; embeddings, norms and "
          "lm_head in bf16)");
ABSL_FLAG(int64_t, fp8_block, 0,
          "With --dtype=fp8: 128 writes 128x128 block scales (quant_method fp8, "
          "weight_scale_inv); 0 per-channel scales");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the weights; the same seed gives the same bytes");
ABSL_FLAG(std::string, corpus, "", "Text file to train the tokenizer on (default: built-in text)");
ABSL_FLAG(int32_t, tokenizer_vocab, 2048, "Tokenizer size to aim for (capped by vocab_size)");
ABSL_FLAG(std::string, sentencepiece_model, "",
          "A SentencePiece model file to ship as tokenizer.model instead of training a "
          "byte-level BPE tokenizer.json (vocab_size grows to its size if smaller)");
ABSL_FLAG(bool, config_only, false, "Write config.json and tokenizer files only, no weights");
ABSL_FLAG(uint64_t, max_shard_bytes, 0,
          "Split weights into shards of at most this many bytes, with an index (0: one file)");

namespace shift {
namespace {

absl::Status ApplyBool(const std::string& flag, const std::string& value, bool* out) {
  if (value.empty()) return absl::OkStatus();
  if (value == "true" || value == "false") {
    *out = value == "true";
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("--" + flag + " must be true or false");
}

int Main() {
  MkModelOptions options;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty())
    return ReportFailure(absl::InvalidArgumentError("--out is required (see --help)"));
  auto preset = PresetConfig(absl::GetFlag(FLAGS_preset));
  if (!preset.ok()) return ReportFailure(preset.status());
  ModelConfig& c = options.config;
  c = *preset;
  auto set = [](int64_t value, int64_t* field) {
    if (value != 0) *field = value;
  };
  set(absl::GetFlag(FLAGS_hidden_size), &c.hidden_size);
  set(absl::GetFlag(FLAGS_intermediate_size), &c.intermediate_size);
  set(absl::GetFlag(FLAGS_num_layers), &c.num_hidden_layers);
  set(absl::GetFlag(FLAGS_num_heads), &c.num_attention_heads);
  set(absl::GetFlag(FLAGS_num_kv_heads), &c.num_key_value_heads);
  set(absl::GetFlag(FLAGS_head_dim), &c.head_dim);
  set(absl::GetFlag(FLAGS_vocab_size), &c.vocab_size);
  set(absl::GetFlag(FLAGS_max_position_embeddings), &c.max_position_embeddings);
  if (absl::GetFlag(FLAGS_rope_theta) != 0) c.rope_theta = absl::GetFlag(FLAGS_rope_theta);
  if (const std::string arch = absl::GetFlag(FLAGS_architecture); !arch.empty()) {
    const std::map<std::string, std::string> model_types = {{"LlamaForCausalLM", "llama"},
                                                            {"Qwen2ForCausalLM", "qwen2"},
                                                            {"Qwen3ForCausalLM", "qwen3"},
                                                            {"MistralForCausalLM", "mistral"}};
    auto type = model_types.find(arch);
    if (type == model_types.end()) {
      return ReportFailure(absl::InvalidArgumentError(
          "--architecture must be LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or "
          "MistralForCausalLM"));
    }
    c.architecture = arch;
    c.model_type = type->second;
    c.attention_bias = arch == "Qwen2ForCausalLM";
    c.qk_norm = arch == "Qwen3ForCausalLM";
  }
  if (const int64_t window = absl::GetFlag(FLAGS_sliding_window); window >= 0) {
    if (window > 0 && c.architecture == "LlamaForCausalLM") {
      return ReportFailure(absl::InvalidArgumentError(
          "--sliding_window needs MistralForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM"));
    }
    c.sliding_window = window;
    c.max_window_layers = 0;
  }
  if (auto s = ApplyBool("tie_word_embeddings", absl::GetFlag(FLAGS_tie_word_embeddings),
                         &c.tie_word_embeddings);
      !s.ok()) {
    return ReportFailure(s);
  }
  if (auto s = ApplyBool("attention_bias", absl::GetFlag(FLAGS_attention_bias), &c.attention_bias);
      !s.ok()) {
    return ReportFailure(s);
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype != "bf16" && dtype != "fp32" && dtype != "fp8") {
    return ReportFailure(absl::InvalidArgumentError("--dtype must be bf16, fp32 or fp8"));
  }
  options.dtype = dtype == "fp32" ? DType::kF32 : dtype == "fp8" ? DType::kF8E4M3 : DType::kBF16;
  options.fp8_block = absl::GetFlag(FLAGS_fp8_block);
  options.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string path = absl::GetFlag(FLAGS_corpus); !path.empty()) {
    auto text = ReadFileToString(path);
    if (!text.ok()) return ReportFailure(text.status());
    options.corpus = *std::move(text);
  }
  options.tokenizer_vocab = absl::GetFlag(FLAGS_tokenizer_vocab);
  if (const std::string path = absl::GetFlag(FLAGS_sentencepiece_model); !path.empty()) {
    auto model = ReadFileToString(path);
    if (!model.ok()) return ReportFailure(model.status());
    options.sentencepiece_model = *std::move(model);
  }
  options.config_only = absl::GetFlag(FLAGS_config_only);
  options.max_shard_bytes = absl::GetFlag(FLAGS_max_shard_bytes);

  auto result = WriteRandomModel(out, options);
  if (!result.ok()) return ReportFailure(result.status());
  const ModelConfig& w = result->config;
  std::printf(
      "wrote %s: %s, %lld layers, hidden %lld, heads %lld/%lld x %lld, vocab %lld, "
      "%.1fM parameters\n",
      out.c_str(), w.architecture.c_str(), static_cast<long long>(w.num_hidden_layers),
      static_cast<long long>(w.hidden_size), static_cast<long long>(w.num_attention_heads),
      static_cast<long long>(w.num_key_value_heads), static_cast<long long>(w.head_dim),
      static_cast<long long>(w.vocab_size), static_cast<double>(w.NumParameters()) / 1e6);
  std::printf("tokenizer: %d tokens; weights: %s\n", result->tokenizer_size,
              options.config_only ? "not written (--config_only)"
                                  : (std::to_string(result->weight_bytes) + " bytes " + dtype +
                                     " in " + std::to_string(result->shards) + " file(s)")
                                        .c_str());
  return 0;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(argc, argv,
                     "Writes a random-weight Llama-family model (config.json, "
                     "safetensors, tokenizer.json) in the Hugging Face layout.",
                     "shift-mkmodel --out=DIR [--preset=tiny] [flags]");
  return shift::Main();
}
