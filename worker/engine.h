// The single-rank CPU engine: holds the weights (fp32, GEMM weights packed
// once at load) and a paged KV cache, and runs one step at a time: a batch
// of sequences, each with new tokens, a start position and a block table
// (prefill chunks and decodes mixed), returning sampled tokens and, when
// asked, logits. The router owns the block tables; the engine only reads
// and writes the blocks it is given.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "worker/model_files.h"

namespace shift {

struct EngineOptions {
  // Bytes for the K and V of all layers together; sets the block count.
  int64_t kv_cache_bytes = 64 << 20;
  int64_t block_size = 16;
  // GEMM threads; results do not depend on it.
  int threads = 2;
};

// One sequence's part of a step.
struct SequenceStep {
  uint64_t seq_id = 0;
  // Tokens whose KV this step computes, at positions start_position...
  std::vector<int32_t> token_ids;
  int64_t start_position = 0;
  // Blocks covering positions 0 .. start_position + token_ids.size() - 1.
  std::vector<int32_t> block_table;
  // Sample after the last token (final prefill chunk or decode).
  bool sample = false;
  kernels::cpu::SamplingParams sampling;
  // Return the sampled row's logits.
  bool return_logits = false;
};

struct SampledToken {
  uint64_t seq_id = 0;
  int32_t token_id = -1;
  float logprob = 0.0f;
  std::vector<float> logits;  // when asked
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelFiles& files,
                                                        const EngineOptions& options);

  // Runs one step; one SampledToken per sequence with `sample`, in order.
  absl::StatusOr<std::vector<SampledToken>> Step(const std::vector<SequenceStep>& batch);

  const ModelConfig& config() const { return config_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return options_.block_size; }
  uint64_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Layer {
    std::vector<float> input_norm, post_norm, q_bias, k_bias, v_bias;
    kernels::cpu::PackedWeight q, k, v, o, gate, up, down;
    std::vector<float> k_cache, v_cache;
  };

  Engine(ModelConfig config, EngineOptions options);
  absl::Status Load(const Checkpoint& checkpoint);
  absl::Status Validate(const std::vector<SequenceStep>& batch) const;
  void Gemm(const std::vector<float>& x, int64_t rows, const kernels::cpu::PackedWeight& w,
            std::vector<float>* y) const;

  ModelConfig config_;
  EngineOptions options_;
  kernels::cpu::Rope rope_;
  std::vector<float> embedding_, final_norm_;
  kernels::cpu::PackedWeight lm_head_;
  std::vector<Layer> layers_;
  int64_t num_blocks_ = 0;
  uint64_t weight_bytes_ = 0;
};

}  // namespace shift
