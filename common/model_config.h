// The shape of a Llama-family model, read from (and written as) a Hugging
// Face config.json: Llama 2/3 (GQA, head_dim, llama3 RoPE scaling, tied
// embeddings), Qwen 2 (biases on the Q, K, V projections), Qwen 3 (an
// RMSNorm over each head of q and of k before RoPE) and Mistral (sliding-
// window attention).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shift {

// rope_scaling of type "llama3" (Llama 3.1+): frequencies below a band are
// divided by `factor`, above it kept, smoothly blended in between.
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// FP8 (E4M3) weights, one of two layouts in config.json's
// quantization_config. compressed-tensors (quant_method
// "compressed-tensors", format "float-quantized"): each quantized Linear
// weight is F8_E4M3 with a `weight_scale` beside it, one per output channel
// ([out, 1]), one for the tensor, or (strategy "block") one per block.
// quant_method "fp8" (transformers' own, weight_block_size [128, 128]): a
// `weight_scale_inv` per block which, despite its name, multiplies too.
// Either way w = code · scale; a block scale covers a block × block tile,
// [ceil(out / block)][ceil(in / block)] of them, the last ones partial.
// Activations are quantized dynamically at run time (a GPU matter: the CPU
// computes in fp32 on the dequantized weights). Static activation scales and
// blocks other than 128 × 128 are refused.
struct Fp8Quantization {
  bool per_channel = true;              // else one scale per tensor (without blocks)
  int64_t block = 0;                    // 128 for 128 × 128 block scales; 0: none
  std::string scale_suffix = "_scale";  // "_scale_inv" for quant_method "fp8"
  std::vector<std::string> ignore;      // modules left unquantized, e.g. "lm_head"
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // first of "architectures"
  std::string model_type = "llama";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA; defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // biases on q/k/v projections (Qwen 2)
  bool qk_norm = false;         // q_norm, k_norm of head_dim per layer (Qwen 3)
  // Sliding-window attention: in a layer that has it, a key at position k is
  // visible to a query at position q when 0 <= q - k < sliding_window
  // (transformers' rule); 0 means no window. As transformers reads it:
  // Mistral windows every layer (4096 when the field is absent, none when
  // null); Qwen 2 and 3 only with use_sliding_window, and then the layers
  // from max_window_layers on, unless layer_types lists them.
  int64_t sliding_window = 0;
  int64_t max_window_layers = 0;
  std::vector<bool> sliding_layers;  // from layer_types; empty: by max_window_layers
  std::string torch_dtype = "bfloat16";
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<Fp8Quantization> quantization;

  // Parameters in the weights (embeddings counted once when tied).
  int64_t NumParameters() const;
  // The window of layer `layer`'s attention; 0 when it sees its whole context.
  int64_t AttentionWindow(int64_t layer) const;
};

// Parses config.json text; `source` (a path) names the file in errors.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);
// Reads DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// config.json text that Hugging Face transformers accepts for this model.
std::string ModelConfigToJson(const ModelConfig& config);
// Checks the invariants every consumer relies on (positive sizes, heads
// dividing evenly); ParseModelConfig already applies it.
absl::Status ValidateModelConfig(const ModelConfig& config, absl::string_view source);

}  // namespace shift
