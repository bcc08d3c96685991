#include "common/model_config.h"

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", why));
}

// Reads an optional integer field; absent or null leaves `out` unchanged.
absl::Status GetInt(const json& j, absl::string_view source, const char* field, int64_t* out,
                    bool required = false) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(source, field, "is missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(source, field, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, absl::string_view source, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(source, field, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, absl::string_view source, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return FieldError(source, field, "must be true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status GetString(const json& j, absl::string_view source, const char* field,
                       std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return FieldError(source, field, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseRopeScaling(const json& j, absl::string_view source, ModelConfig* config) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError(source, "rope_scaling", "must be an object or null");
  std::string type;
  SHIFT_RETURN_IF_ERROR(GetString(*it, source, "rope_type", &type));
  if (type.empty()) SHIFT_RETURN_IF_ERROR(GetString(*it, source, "type", &type));
  if (type.empty()) return FieldError(source, "rope_scaling", "has no \"rope_type\"");
  if (type != "llama3") {
    return absl::UnimplementedError(absl::StrCat(source, ": rope_scaling of type \"", type,
                                                 "\" is not supported (only llama3)"));
  }
  Llama3RopeScaling scaling;
  SHIFT_RETURN_IF_ERROR(GetDouble(*it, source, "factor", &scaling.factor));
  SHIFT_RETURN_IF_ERROR(GetDouble(*it, source, "low_freq_factor", &scaling.low_freq_factor));
  SHIFT_RETURN_IF_ERROR(GetDouble(*it, source, "high_freq_factor", &scaling.high_freq_factor));
  SHIFT_RETURN_IF_ERROR(GetInt(*it, source, "original_max_position_embeddings",
                               &scaling.original_max_position_embeddings));
  if (scaling.factor < 1.0 || scaling.low_freq_factor <= 0 ||
      scaling.high_freq_factor <= scaling.low_freq_factor ||
      scaling.original_max_position_embeddings <= 0) {
    return FieldError(source, "rope_scaling",
                      "needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a "
                      "positive original_max_position_embeddings");
  }
  config->rope_scaling = scaling;
  return absl::OkStatus();
}

absl::Status ParseEos(const json& j, absl::string_view source, ModelConfig* config) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_integer()) {
    config->eos_token_ids = {it->get<int64_t>()};
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError(source, "eos_token_id", "must be an integer or a list");
  for (const json& id : *it) {
    if (!id.is_number_integer()) {
      return FieldError(source, "eos_token_id", "must hold integers only");
    }
    config->eos_token_ids.push_back(id.get<int64_t>());
  }
  return absl::OkStatus();
}

// A field of an object, or a default when absent or of another type
// (json::value would throw on a type mismatch).
std::string StringOr(const json& o, const char* key, const std::string& otherwise) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : otherwise;
}
int64_t IntOr(const json& o, const char* key, int64_t otherwise) {
  auto it = o.find(key);
  return it != o.end() && it->is_number_integer() ? it->get<int64_t>() : otherwise;
}
bool BoolOr(const json& o, const char* key, bool otherwise) {
  auto it = o.find(key);
  return it != o.end() && it->is_boolean() ? it->get<bool>() : otherwise;
}

// A block size list ([128, 128]: weight_block_size or block_structure);
// shift runs 128 × 128 blocks only. Absent, it is 128 × 128 where
// `defaults` (transformers' FineGrainedFP8Config), else an error.
absl::Status ParseBlock(const json& q, absl::string_view source, const char* field,
                        const std::string& path, bool defaults, int64_t* block) {
  auto it = q.find(field);
  if (it == q.end() || it->is_null()) {
    if (!defaults) return FieldError(source, path, "is missing");
    *block = 128;
    return absl::OkStatus();
  }
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
      !(*it)[1].is_number_integer()) {
    return FieldError(source, path, "must be a list of two integers, [128, 128]");
  }
  const int64_t rows = (*it)[0].get<int64_t>(), cols = (*it)[1].get<int64_t>();
  if (rows != 128 || cols != 128) {
    return FieldError(
        source, path,
        absl::StrCat("is [", rows, ", ", cols, "]; only 128 x 128 block scales are supported"));
  }
  *block = 128;
  return absl::OkStatus();
}

absl::Status ParseIgnore(const json& q, absl::string_view source, const char* field,
                         Fp8Quantization* fp8) {
  auto ignore = q.find(field);
  if (ignore == q.end() || ignore->is_null()) return absl::OkStatus();
  const std::string path = absl::StrCat("quantization_config.", field);
  if (!ignore->is_array()) return FieldError(source, path, "must be a list");
  for (const json& name : *ignore) {
    if (!name.is_string()) return FieldError(source, path, "must be a list of strings");
    fp8->ignore.push_back(name.get<std::string>());
  }
  return absl::OkStatus();
}

// quantization_config of quant_method "fp8" (transformers' FP8 layout:
// E4M3 weights with 128 × 128 block scales, dynamic activations).
absl::Status ParseFp8Method(const json& q, absl::string_view source, ModelConfig* config) {
  Fp8Quantization fp8;
  fp8.per_channel = false;
  fp8.scale_suffix = "_scale_inv";
  if (const std::string fmt = StringOr(q, "fmt", "e4m3"); fmt != "e4m3") {
    return FieldError(source, "quantization_config.fmt",
                      absl::StrCat("is \"", fmt, "\" (only e4m3 is supported)"));
  }
  if (const std::string scheme = StringOr(q, "activation_scheme", "dynamic"); scheme != "dynamic") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": quantization_config.activation_scheme \"", scheme,
                     "\" is not supported (dynamic: activations are quantized at run time)"));
  }
  SHIFT_RETURN_IF_ERROR(ParseBlock(q, source, "weight_block_size",
                                   "quantization_config.weight_block_size", /*defaults=*/true,
                                   &fp8.block));
  SHIFT_RETURN_IF_ERROR(ParseIgnore(q, source, "modules_to_not_convert", &fp8));
  config->quantization = std::move(fp8);
  return absl::OkStatus();
}

// quantization_config: FP8 in the compressed-tensors or transformers' fp8
// layout, or nothing.
absl::Status ParseQuantization(const json& j, absl::string_view source, ModelConfig* config) {
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  const char* field = "quantization_config";
  if (!it->is_object()) return FieldError(source, field, "must be an object or null");
  const json& q = *it;
  const std::string method = StringOr(q, "quant_method", "");
  if (method == "fp8") return ParseFp8Method(q, source, config);
  if (method != "compressed-tensors") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": quantization_config.quant_method \"", method,
                     "\" is not supported (shift reads FP8 weights: compressed-tensors or fp8)"));
  }
  if (const std::string format = StringOr(q, "format", "float-quantized");
      format != "float-quantized") {
    return absl::UnimplementedError(absl::StrCat(source, ": quantization_config.format \"", format,
                                                 "\" is not supported (float-quantized)"));
  }
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->size() != 1) {
    return FieldError(source, "quantization_config.config_groups",
                      "must hold exactly one group (its targets: Linear)");
  }
  const json& group = groups->begin().value();
  auto weights = group.find("weights");
  if (!group.is_object() || weights == group.end() || !weights->is_object()) {
    return FieldError(source, "quantization_config.config_groups", "has no \"weights\" object");
  }
  Fp8Quantization fp8;
  const std::string strategy = StringOr(*weights, "strategy", "");
  if (IntOr(*weights, "num_bits", 0) != 8 || StringOr(*weights, "type", "") != "float") {
    return absl::UnimplementedError(absl::StrCat(
        source, ": quantized weights must be 8-bit floats (num_bits 8, type \"float\": FP8 E4M3)"));
  }
  if (strategy == "block") {
    SHIFT_RETURN_IF_ERROR(ParseBlock(*weights, source, "block_structure",
                                     "quantization_config weights.block_structure",
                                     /*defaults=*/false, &fp8.block));
  } else if (strategy != "channel" && strategy != "tensor") {
    return FieldError(source, "quantization_config weights.strategy",
                      absl::StrCat("is \"", strategy, "\" (channel, tensor or block)"));
  }
  fp8.per_channel = strategy == "channel";
  if (auto act = group.find("input_activations"); act != group.end() && !act->is_null()) {
    if (!act->is_object() || IntOr(*act, "num_bits", 0) != 8 ||
        StringOr(*act, "type", "") != "float" || !BoolOr(*act, "dynamic", false)) {
      return absl::UnimplementedError(
          absl::StrCat(source,
                       ": input activations must be FP8 quantized dynamically (dynamic: true); "
                       "static activation scales are not supported"));
    }
  }
  SHIFT_RETURN_IF_ERROR(ParseIgnore(q, source, "ignore", &fp8));
  config->quantization = std::move(fp8);
  return absl::OkStatus();
}

// Sliding-window attention as transformers reads each family's config.
absl::Status ParseSlidingWindow(const json& j, absl::string_view source, ModelConfig* c) {
  const bool mistral = c->architecture == "MistralForCausalLM";
  const bool qwen = c->architecture == "Qwen2ForCausalLM" || c->architecture == "Qwen3ForCausalLM";
  if (!mistral && !qwen) return absl::OkStatus();  // Llama has no window
  // transformers' defaults when a field is absent: Mistral 4096; Qwen a
  // window of 4096 from layer 28 on, used only with use_sliding_window.
  int64_t window = 4096;
  auto it = j.find("sliding_window");
  if (it != j.end() && it->is_null()) {
    window = 0;
  } else if (it != j.end()) {
    if (!it->is_number_integer()) {
      return FieldError(source, "sliding_window", "must be an integer or null");
    }
    window = it->get<int64_t>();
    if (window <= 0) {
      return FieldError(source, "sliding_window",
                        absl::StrCat("must be positive (or null for none), got ", window));
    }
  }
  if (qwen) {
    bool use = false;
    SHIFT_RETURN_IF_ERROR(GetBool(j, source, "use_sliding_window", &use));
    c->max_window_layers = 28;
    SHIFT_RETURN_IF_ERROR(GetInt(j, source, "max_window_layers", &c->max_window_layers));
    if (c->max_window_layers < 0) {
      return FieldError(source, "max_window_layers",
                        absl::StrCat("must not be negative, got ", c->max_window_layers));
    }
    if (!use) window = 0;
  }
  c->sliding_window = window;
  if (auto types = j.find("layer_types"); types != j.end() && !types->is_null()) {
    if (!types->is_array()) return FieldError(source, "layer_types", "must be a list");
    for (const json& type : *types) {
      const std::string name = type.is_string() ? type.get<std::string>() : "";
      if (name != "full_attention" && name != "sliding_attention") {
        return FieldError(source, "layer_types",
                          "must list \"full_attention\" or \"sliding_attention\" per layer");
      }
      c->sliding_layers.push_back(name == "sliding_attention" && window > 0);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseObject(const json& j, absl::string_view source) {
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  ModelConfig c;
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string()) {
      return FieldError(source, "architectures", "must be a non-empty list of strings");
    }
    c.architecture = (*it)[0].get<std::string>();
  }
  SHIFT_RETURN_IF_ERROR(GetString(j, source, "model_type", &c.model_type));
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "Qwen2ForCausalLM" &&
      c.architecture != "Qwen3ForCausalLM" && c.architecture != "MistralForCausalLM") {
    return absl::UnimplementedError(absl::StrCat(source, ": architecture ", c.architecture,
                                                 " is not supported (LlamaForCausalLM, "
                                                 "Qwen2ForCausalLM, Qwen3ForCausalLM, "
                                                 "MistralForCausalLM)"));
  }
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "hidden_size", &c.hidden_size, true));
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "intermediate_size", &c.intermediate_size, true));
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "num_hidden_layers", &c.num_hidden_layers, true));
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "num_attention_heads", &c.num_attention_heads, true));
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "vocab_size", &c.vocab_size, true));
  c.num_key_value_heads = c.num_attention_heads;
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "num_key_value_heads", &c.num_key_value_heads));
  // Without head_dim, transformers splits hidden_size evenly over the heads;
  // a remainder would silently drop part of every projection.
  if (auto it = j.find("head_dim"); it != j.end() && !it->is_null()) {
    SHIFT_RETURN_IF_ERROR(GetInt(j, source, "head_dim", &c.head_dim));
  } else if (c.architecture == "Qwen3ForCausalLM") {
    c.head_dim = 128;  // Qwen3Config's default, whatever the width
  } else if (c.num_attention_heads > 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError(
          source, "hidden_size",
          absl::StrCat("(", c.hidden_size, ") must be divisible by num_attention_heads (",
                       c.num_attention_heads, ") when head_dim is absent"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "max_position_embeddings", &c.max_position_embeddings));
  SHIFT_RETURN_IF_ERROR(GetDouble(j, source, "rope_theta", &c.rope_theta));
  SHIFT_RETURN_IF_ERROR(ParseRopeScaling(j, source, &c));
  SHIFT_RETURN_IF_ERROR(GetDouble(j, source, "rms_norm_eps", &c.rms_norm_eps));
  SHIFT_RETURN_IF_ERROR(GetBool(j, source, "tie_word_embeddings", &c.tie_word_embeddings));
  // Qwen 2 always has q/k/v biases; Llama and Qwen 3 only with
  // attention_bias. Qwen 3 always normalizes each head of q and k.
  c.attention_bias = c.architecture == "Qwen2ForCausalLM";
  SHIFT_RETURN_IF_ERROR(GetBool(j, source, "attention_bias", &c.attention_bias));
  c.qk_norm = c.architecture == "Qwen3ForCausalLM";
  SHIFT_RETURN_IF_ERROR(ParseSlidingWindow(j, source, &c));
  if (auto it = j.find("mlp_bias"); it != j.end() && it->is_boolean() && it->get<bool>()) {
    return absl::UnimplementedError(absl::StrCat(source, ": mlp_bias is not supported"));
  }
  SHIFT_RETURN_IF_ERROR(GetString(j, source, "torch_dtype", &c.torch_dtype));
  int64_t bos = -1;
  SHIFT_RETURN_IF_ERROR(GetInt(j, source, "bos_token_id", &bos));
  if (bos >= 0) c.bos_token_id = bos;
  SHIFT_RETURN_IF_ERROR(ParseEos(j, source, &c));
  SHIFT_RETURN_IF_ERROR(ParseQuantization(j, source, &c));
  SHIFT_RETURN_IF_ERROR(ValidateModelConfig(c, source));
  return c;
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t per_layer = 2 * hidden_size                                 // two norms
                      + hidden_size * (q + 2 * kv) + q * hidden_size  // q, k, v, o
                      + 3 * hidden_size * intermediate_size;          // gate, up, down
  if (attention_bias) per_layer += q + 2 * kv;
  if (qk_norm) per_layer += 2 * head_dim;
  int64_t embeddings = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return embeddings + num_hidden_layers * per_layer + hidden_size;
}

int64_t ModelConfig::AttentionWindow(int64_t layer) const {
  if (sliding_window <= 0) return 0;
  if (!sliding_layers.empty()) return sliding_layers[layer] ? sliding_window : 0;
  return layer >= max_window_layers ? sliding_window : 0;
}

absl::Status ValidateModelConfig(const ModelConfig& c, absl::string_view source) {
  // Positive, and within limits well above any published model: a value
  // past them is a broken or hostile file, refused before anything is
  // allocated from it.
  struct Bounded {
    const char* name;
    int64_t value;
    int64_t max;
  };
  for (const Bounded& p :
       {Bounded{"hidden_size", c.hidden_size, int64_t{1} << 17},
        Bounded{"intermediate_size", c.intermediate_size, int64_t{1} << 20},
        Bounded{"num_hidden_layers", c.num_hidden_layers, 1024},
        Bounded{"num_attention_heads", c.num_attention_heads, 1024},
        Bounded{"num_key_value_heads", c.num_key_value_heads, 1024},
        Bounded{"head_dim", c.head_dim, 1024},
        Bounded{"vocab_size", c.vocab_size, int64_t{1} << 24},
        Bounded{"max_position_embeddings", c.max_position_embeddings, int64_t{1} << 24}}) {
    if (p.value <= 0)
      return FieldError(source, p.name, absl::StrCat("must be positive, got ", p.value));
    if (p.value > p.max) {
      return FieldError(source, p.name,
                        absl::StrCat("is ", p.value, ", over the limit of ", p.max));
    }
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(
        source, "num_key_value_heads",
        absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                     c.num_attention_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", absl::StrCat("must be even for RoPE, got ", c.head_dim));
  }
  if (!(c.rms_norm_eps > 0)) return FieldError(source, "rms_norm_eps", "must be positive");
  if (c.sliding_window < 0) {
    return FieldError(source, "sliding_window",
                      absl::StrCat("must be positive (or null for none), got ", c.sliding_window));
  }
  if (!c.sliding_layers.empty() &&
      static_cast<int64_t>(c.sliding_layers.size()) != c.num_hidden_layers) {
    return FieldError(source, "layer_types",
                      absl::StrCat("lists ", c.sliding_layers.size(), " layers, not ",
                                   c.num_hidden_layers, " (num_hidden_layers)"));
  }
  if (!(c.rope_theta > 0)) return FieldError(source, "rope_theta", "must be positive");
  for (int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return FieldError(source, "eos_token_id",
                        absl::StrCat("holds ", id, ", outside the vocabulary of ", c.vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  // Field accessors above check types first, so nothing below throws.
  return ParseObject(j, source);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, size_t{4} << 20));
  return ParseModelConfig(text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j = {
      {"architectures", {c.architecture}},
      {"model_type", c.model_type},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_bias", c.attention_bias},
      {"mlp_bias", false},
      {"hidden_act", "silu"},
      {"torch_dtype", c.torch_dtype},
  };
  if (c.rope_scaling) {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling->factor},
        {"low_freq_factor", c.rope_scaling->low_freq_factor},
        {"high_freq_factor", c.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.architecture == "MistralForCausalLM") {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  } else if (c.architecture == "Qwen2ForCausalLM" || c.architecture == "Qwen3ForCausalLM") {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    j["max_window_layers"] = c.max_window_layers;
  }
  if (!c.sliding_layers.empty()) {
    json types = json::array();
    for (bool sliding : c.sliding_layers) {
      types.push_back(sliding ? "sliding_attention" : "full_attention");
    }
    j["layer_types"] = types;
  }
  if (c.quantization && c.quantization->scale_suffix == "_scale_inv") {
    j["quantization_config"] = {
        {"quant_method", "fp8"},
        {"fmt", "e4m3"},
        {"activation_scheme", "dynamic"},
        {"weight_block_size", {c.quantization->block, c.quantization->block}},
        {"modules_to_not_convert", c.quantization->ignore}};
  } else if (c.quantization) {
    const json fp8 = {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}};
    json weights = fp8, activations = fp8;
    weights["strategy"] =
        c.quantization->block > 0 ? "block" : (c.quantization->per_channel ? "channel" : "tensor");
    if (c.quantization->block > 0) {
      weights["block_structure"] = {c.quantization->block, c.quantization->block};
    }
    weights["dynamic"] = false;
    activations["strategy"] = "token";
    activations["dynamic"] = true;
    j["quantization_config"] = {
        {"quant_method", "compressed-tensors"},
        {"format", "float-quantized"},
        {"quantization_status", "compressed"},
        {"config_groups",
         {{"group_0",
           {{"targets", {"Linear"}}, {"weights", weights}, {"input_activations", activations}}}}},
        {"ignore", c.quantization->ignore}};
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
  return j.dump(2) + "\n";
}

}  // namespace shift
