// The one place that says which tensors a Llama-family checkpoint holds and
// their shapes (Hugging Face names), derived from its config. The loader
// checks checkpoints against it; the model generator writes it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/step_mode.h"

namespace shift {

// What a tensor is, which decides how a generator initialises it.
enum class TensorRole { kEmbedding, kNorm, kProjection, kBias, kLmHead };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;

  int64_t NumElements() const;
};

// In file order: embeddings, then each layer, then the final norm and
// lm_head (absent when tie_word_embeddings).
std::vector<TensorSpec> ModelTensorSpecs(const ModelConfig& config);

// Every expected tensor exists with its shape; extra tensors (for example
// rotary_emb.inv_freq buffers) are ignored. Errors name the file and tensor.
absl::Status CheckCheckpointAgainstSchema(const Checkpoint& checkpoint, const ModelConfig& config);

// The values rank `rank` of `layout` holds (docs/architecture.md, The
// hybrid layout): its TP shard of the layers' projections (a kv head on
// every shard when there are fewer than tp), and the rest: its shard of the
// LM head in whole panels of `panel` rows, and the embedding, norms and
// biases whole. The executor loads exactly these; shift-sim prices them.
struct RankWeights {
  double projections = 0;
  double other = 0;
};
RankWeights WeightsOfRank(const ModelConfig& config, const GroupLayout& layout, int rank,
                          int64_t panel);

// The name of a quantized weight's scale in `config`'s layout: "x.weight"
// -> "x.weight_scale" (compressed-tensors) or "x.weight_scale_inv" (fp8).
std::string WeightScaleName(const ModelConfig& config, const std::string& weight_name);

// Reads tensor `name` of `rows` x `cols` (a vector: rows 1) as fp32. An
// F8_E4M3 tensor is dequantized with its scale (one per row, [rows, 1] or
// [rows]; one for the tensor, [] or [1]; or, with block scales, one fp32
// per block x block tile, [ceil(rows / block), ceil(cols / block)]): w =
// code · scale, one multiply, the same bits every time. A config without
// quantization_config refuses F8_E4M3. Errors name the file and tensor.
absl::Status ReadWeightAsF32(const Checkpoint& checkpoint, const ModelConfig& config,
                             const std::string& name, int64_t rows, int64_t cols, float* out);

// An F8_E4M3 weight as stored: its codes (row-major, in the checkpoint's
// mapped memory: valid while it is open) and its scales: one per row, or
// (block > 0) one per block x block tile of the whole weight, row-major.
struct Fp8Weight {
  const unsigned char* codes = nullptr;
  std::vector<float> row_scales;
  int64_t block = 0;
  std::vector<float> block_scales;
};
// Weight `name` of `rows` x `cols` as FP8 codes and scales; nullopt when it
// is not F8_E4M3. Scales as ReadWeightAsF32 reads them.
absl::StatusOr<std::optional<Fp8Weight>> ReadFp8Weight(const Checkpoint& checkpoint,
                                                       const ModelConfig& config,
                                                       const std::string& name, int64_t rows,
                                                       int64_t cols);

}  // namespace shift
