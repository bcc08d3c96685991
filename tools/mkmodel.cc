#include "tools/mkmodel.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/bpe_trainer.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/sentencepiece_tokenizer.h"
#include "common/status.h"
#include "common/tokenizer.h"
#include "nlohmann/json.hpp"

// Generated at build time from tools/data/corpus.txt.
extern const unsigned char kShiftBuiltinCorpus[];
extern const size_t kShiftBuiltinCorpusSize;

namespace shift {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

// Uniform in [-1, 1).
float Uniform(uint64_t key, int64_t index) {
  uint64_t bits = SplitMix64(key ^ SplitMix64(static_cast<uint64_t>(index)));
  return static_cast<float>(static_cast<double>(bits >> 40) / static_cast<double>(1 << 23) - 1.0);
}

ModelConfig Llama31(int64_t hidden, int64_t inter, int64_t layers, int64_t heads) {
  ModelConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rope_theta = 500000.0;
  c.rope_scaling = Llama3RopeScaling{};
  c.rms_norm_eps = 1e-5;
  return c;
}

}  // namespace

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  if (name == "tiny") {
    ModelConfig c;
    c.hidden_size = 64;
    c.intermediate_size = 192;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 1024;
    c.max_position_embeddings = 2048;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    return c;
  }
  if (name == "tiny-qwen3") {
    ModelConfig c = *PresetConfig("tiny");
    c.architecture = "Qwen3ForCausalLM";
    c.model_type = "qwen3";
    c.qk_norm = true;
    return c;
  }
  if (name == "tiny-mistral") {
    ModelConfig c = *PresetConfig("tiny");
    c.architecture = "MistralForCausalLM";
    c.model_type = "mistral";
    c.sliding_window = 16;
    return c;
  }
  if (name == "qwen3-32b") {
    ModelConfig c;
    c.architecture = "Qwen3ForCausalLM";
    c.model_type = "qwen3";
    c.hidden_size = 5120;
    c.intermediate_size = 25600;
    c.num_hidden_layers = 64;
    c.num_attention_heads = 64;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.vocab_size = 151936;
    c.max_position_embeddings = 40960;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.qk_norm = true;
    c.max_window_layers = 64;
    return c;
  }
  if (name == "mistral-7b") {
    ModelConfig c;
    c.architecture = "MistralForCausalLM";
    c.model_type = "mistral";
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_hidden_layers = 32;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.vocab_size = 32000;
    c.max_position_embeddings = 32768;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    c.sliding_window = 4096;
    return c;
  }
  if (name == "llama3-8b") return Llama31(4096, 14336, 32, 32);
  if (name == "llama3-70b") return Llama31(8192, 28672, 80, 64);
  if (name == "qwen2-32b") {
    ModelConfig c;
    c.architecture = "Qwen2ForCausalLM";
    c.model_type = "qwen2";
    c.hidden_size = 5120;
    c.intermediate_size = 27648;
    c.num_hidden_layers = 64;
    c.num_attention_heads = 40;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.vocab_size = 152064;
    c.max_position_embeddings = 32768;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.attention_bias = true;
    return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", name,
                   "\" (tiny, tiny-qwen3, tiny-mistral, llama3-8b, llama3-70b, qwen2-32b, "
                   "qwen3-32b, mistral-7b)"));
}

std::string_view BuiltinCorpus() {
  return std::string_view(reinterpret_cast<const char*>(kShiftBuiltinCorpus),
                          kShiftBuiltinCorpusSize);
}

float RandomWeight(uint64_t seed, const TensorSpec& spec, int64_t index) {
  const float u = Uniform(SplitMix64(seed) ^ NameHash(spec.name), index);
  // Uniform on [-a, a) has standard deviation a / sqrt(3): 0.02 like HF's
  // initializer_range, so activations stay in a sane range through layers.
  constexpr float kScale = 0.02f * 1.7320508f;
  switch (spec.role) {
    case TensorRole::kNorm:
      return 1.0f + 0.1f * u;
    case TensorRole::kBias:
      return 0.02f * u;
    case TensorRole::kEmbedding:
    case TensorRole::kProjection:
    case TensorRole::kLmHead:
      return kScale * u;
  }
  return 0.0f;
}

std::string RandomTensorBytes(uint64_t seed, const TensorSpec& spec, DType dtype) {
  const int64_t n = spec.NumElements();
  std::string bytes(static_cast<size_t>(n) * DTypeSize(dtype), '\0');
  char* out = bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    const float v = RandomWeight(seed, spec, i);
    if (dtype == DType::kF32) {
      std::memcpy(out + 4 * i, &v, 4);
    } else {
      const uint16_t h = F32ToBf16(v);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  return bytes;
}

Fp8Quantized QuantizeFp8PerRow(const std::vector<float>& values, int64_t rows, int64_t cols) {
  Fp8Quantized out;
  out.bytes.resize(static_cast<size_t>(rows * cols));
  out.scales.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    float top = 0.0f;
    for (int64_t c = 0; c < cols; ++c) top = std::max(top, std::fabs(values[r * cols + c]));
    const float scale = Bf16ToF32(F32ToBf16(top > 0.0f ? top / 448.0f : 1.0f));
    out.scales[r] = scale;
    for (int64_t c = 0; c < cols; ++c) {
      out.bytes[r * cols + c] = static_cast<char>(F32ToF8E4M3(values[r * cols + c] / scale));
    }
  }
  return out;
}

Fp8Quantized QuantizeFp8Blocks(const std::vector<float>& values, int64_t rows, int64_t cols,
                               int64_t block) {
  const int64_t tile_rows = (rows + block - 1) / block, tile_cols = (cols + block - 1) / block;
  Fp8Quantized out;
  out.bytes.resize(static_cast<size_t>(rows * cols));
  out.scales.assign(static_cast<size_t>(tile_rows * tile_cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float& top = out.scales[r / block * tile_cols + c / block];
      top = std::max(top, std::fabs(values[r * cols + c]));
    }
  }
  for (float& scale : out.scales) scale = scale > 0.0f ? scale / 448.0f : 1.0f;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float scale = out.scales[r / block * tile_cols + c / block];
      out.bytes[r * cols + c] = static_cast<char>(F32ToF8E4M3(values[r * cols + c] / scale));
    }
  }
  return out;
}

namespace {

// The tensors one spec becomes: itself, and for an FP8 projection its scale.
std::vector<TensorToWrite> SpecTensors(uint64_t seed, const ModelConfig& config,
                                       const TensorSpec& spec, bool fp8, DType dtype,
                                       std::vector<std::string>* data) {
  if (!fp8 || spec.role != TensorRole::kProjection) {
    data->push_back(RandomTensorBytes(seed, spec, dtype));
    return {{spec.name, dtype, spec.shape, data->back()}};
  }
  std::vector<float> values(static_cast<size_t>(spec.NumElements()));
  for (size_t i = 0; i < values.size(); ++i) values[i] = RandomWeight(seed, spec, i);
  if (const int64_t block = config.quantization->block; block > 0) {
    Fp8Quantized q = QuantizeFp8Blocks(values, spec.shape[0], spec.shape[1], block);
    std::string scales(q.scales.size() * sizeof(float), '\0');
    std::memcpy(scales.data(), q.scales.data(), scales.size());
    data->push_back(std::move(q.bytes));
    const std::string& weight = data->back();
    data->push_back(std::move(scales));
    const std::vector<int64_t> grid = {(spec.shape[0] + block - 1) / block,
                                       (spec.shape[1] + block - 1) / block};
    return {{spec.name, DType::kF8E4M3, spec.shape, weight},
            {WeightScaleName(config, spec.name), DType::kF32, grid, data->back()}};
  }
  Fp8Quantized q = QuantizeFp8PerRow(values, spec.shape[0], spec.shape[1]);
  std::string scales(q.scales.size() * 2, '\0');
  for (size_t i = 0; i < q.scales.size(); ++i) {
    const uint16_t h = F32ToBf16(q.scales[i]);
    std::memcpy(scales.data() + 2 * i, &h, 2);
  }
  data->push_back(std::move(q.bytes));
  const std::string& weight = data->back();
  data->push_back(std::move(scales));
  return {{spec.name, DType::kF8E4M3, spec.shape, weight},
          {WeightScaleName(config, spec.name), DType::kBF16, {spec.shape[0], 1}, data->back()}};
}

}  // namespace

namespace {

// The byte-level BPE tokenizer trained on the corpus: tokenizer.json and
// tokenizer_config.json; sets the config's BOS/EOS ids.
absl::Status WriteTrainedTokenizer(const std::string& dir, const MkModelOptions& options,
                                   MkModelResult* result) {
  ModelConfig& config = result->config;
  BpeTrainerOptions trainer;
  trainer.vocab_size =
      static_cast<int32_t>(std::min<int64_t>(options.tokenizer_vocab, config.vocab_size));
  const std::string_view corpus =
      options.corpus.empty() ? BuiltinCorpus() : std::string_view(options.corpus);
  SHIFT_ASSIGN_OR_RETURN(std::string tokenizer_json, TrainByteLevelBpe(corpus, trainer));
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromJson(tokenizer_json));
  result->tokenizer_size = tokenizer->vocab_size();
  config.bos_token_id = *tokenizer->TokenToId(trainer.special_tokens[0]);
  config.eos_token_ids = {*tokenizer->TokenToId(trainer.special_tokens[1])};

  SHIFT_RETURN_IF_ERROR(WriteStringToFile(dir + "/tokenizer.json", tokenizer_json));
  nlohmann::json tokenizer_config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                                     {"bos_token", trainer.special_tokens[0]},
                                     {"eos_token", trainer.special_tokens[1]},
                                     {"model_max_length", config.max_position_embeddings},
                                     {"clean_up_tokenization_spaces", false}};
  return WriteStringToFile(dir + "/tokenizer_config.json", tokenizer_config.dump(2) + "\n");
}

}  // namespace

absl::StatusOr<MkModelResult> WriteRandomModel(const std::string& dir,
                                               const MkModelOptions& options) {
  if (options.dtype == DType::kF16) {
    return absl::InvalidArgumentError("shift-mkmodel writes bf16, fp32 or fp8 weights");
  }
  MkModelResult result;
  result.config = options.config;
  ModelConfig& config = result.config;
  const bool fp8 = options.dtype == DType::kF8E4M3;
  // FP8 checkpoints keep embeddings, norms and lm_head in bf16.
  const DType dtype = fp8 ? DType::kBF16 : options.dtype;
  config.torch_dtype = dtype == DType::kF32 ? "float32" : "bfloat16";
  if (fp8 && options.fp8_block > 0) {
    if (options.fp8_block != 128) {
      return absl::InvalidArgumentError(
          absl::StrCat("FP8 block scales are 128 x 128, not ", options.fp8_block));
    }
    Fp8Quantization blocks;
    blocks.per_channel = false;
    blocks.block = options.fp8_block;
    blocks.scale_suffix = "_scale_inv";
    blocks.ignore = {"lm_head"};
    config.quantization = std::move(blocks);
  } else if (fp8) {
    Fp8Quantization channels;
    channels.ignore = {"lm_head"};
    config.quantization = std::move(channels);
  } else if (options.fp8_block > 0) {
    return absl::InvalidArgumentError("FP8 block scales need FP8 weights (--dtype=fp8)");
  }
  std::unique_ptr<SentencePieceTokenizer> sentencepiece;
  if (!options.sentencepiece_model.empty()) {
    SHIFT_ASSIGN_OR_RETURN(sentencepiece,
                           SentencePieceTokenizer::FromModel(options.sentencepiece_model));
    if (!sentencepiece->model_bos_id() || !sentencepiece->model_eos_id()) {
      return absl::InvalidArgumentError("the SentencePiece model has no BOS or no EOS piece");
    }
    config.vocab_size = std::max<int64_t>(config.vocab_size, sentencepiece->vocab_size());
  }
  SHIFT_RETURN_IF_ERROR(ValidateModelConfig(config, "model options"));

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  // A checkpoint left by an earlier run would be read instead of (or mixed
  // with) the new one.
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if ((name.rfind("model", 0) == 0 &&
         (name.ends_with(".safetensors") || name == "model.safetensors.index.json")) ||
        name == "tokenizer.json" || name == "tokenizer.model") {
      std::filesystem::remove(entry.path(), ec);
    }
  }

  // Tokenizer first: its special tokens give the config's bos/eos ids.
  if (sentencepiece) {
    result.tokenizer_size = sentencepiece->vocab_size();
    config.bos_token_id = *sentencepiece->model_bos_id();
    config.eos_token_ids = {*sentencepiece->model_eos_id()};
    SHIFT_RETURN_IF_ERROR(WriteStringToFile(dir + "/tokenizer.model", options.sentencepiece_model));
    const nlohmann::json tokenizer_config = {
        {"tokenizer_class", "LlamaTokenizer"},
        {"add_bos_token", true},
        {"add_eos_token", false},
        {"bos_token", *sentencepiece->TokenBytes(*config.bos_token_id)},
        {"eos_token", *sentencepiece->TokenBytes(config.eos_token_ids[0])},
        {"model_max_length", config.max_position_embeddings},
        {"clean_up_tokenization_spaces", false}};
    SHIFT_RETURN_IF_ERROR(
        WriteStringToFile(dir + "/tokenizer_config.json", tokenizer_config.dump(2) + "\n"));
  } else {
    SHIFT_RETURN_IF_ERROR(WriteTrainedTokenizer(dir, options, &result));
  }
  nlohmann::json generation_config = {{"bos_token_id", *config.bos_token_id},
                                      {"eos_token_id", config.eos_token_ids[0]}};
  SHIFT_RETURN_IF_ERROR(
      WriteStringToFile(dir + "/generation_config.json", generation_config.dump(2) + "\n"));
  SHIFT_RETURN_IF_ERROR(WriteStringToFile(dir + "/config.json", ModelConfigToJson(config)));
  if (options.config_only) return result;

  // Plan shards by size, then write one shard at a time.
  const std::vector<TensorSpec> specs = ModelTensorSpecs(config);
  std::vector<std::vector<const TensorSpec*>> shards(1);
  uint64_t shard_bytes = 0;
  for (const TensorSpec& spec : specs) {
    const bool quantized = fp8 && spec.role == TensorRole::kProjection;
    const int64_t block = options.fp8_block;
    const int64_t scale_bytes = block > 0 ? 4 * ((spec.shape[0] + block - 1) / block) *
                                                ((spec.shape.back() + block - 1) / block)
                                          : 2 * spec.shape[0];
    const uint64_t bytes = quantized ? static_cast<uint64_t>(spec.NumElements() + scale_bytes)
                                     : static_cast<uint64_t>(spec.NumElements()) * DTypeSize(dtype);
    if (options.max_shard_bytes > 0 && shard_bytes > 0 &&
        shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&spec);
    shard_bytes += bytes;
    result.weight_bytes += bytes;
  }
  result.shards = static_cast<int>(shards.size());
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? "model.safetensors"
                                                : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                                  s + 1, shards.size());
    std::vector<std::string> data;
    std::vector<TensorToWrite> tensors;
    data.reserve(2 * shards[s].size());  // no reallocation: tensors point into it
    for (const TensorSpec* spec : shards[s]) {
      for (TensorToWrite& t : SpecTensors(options.seed, config, *spec, fp8, dtype, &data)) {
        weight_map[t.name] = file;
        tensors.push_back(std::move(t));
      }
    }
    SHIFT_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + file, tensors, {{"format", "pt"}}));
  }
  if (shards.size() > 1) {
    SHIFT_RETURN_IF_ERROR(WriteSafetensorsIndex(dir, weight_map, result.weight_bytes));
  }
  return result;
}

}  // namespace shift
