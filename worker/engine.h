// The CPU engine of one rank: holds the weights (fp32, GEMM weights packed
// once at load: one copy, which TP slices by panel and K ranges) and the
// paged KV cache of its kv-head shard, and runs one step at a time: a batch
// of sequences, each with new tokens, a start position and a block table
// (prefill chunks and decodes mixed), returning sampled tokens and, when
// asked, logits. With a Communicator of P ranks, each step runs in tensor
// or sequence parallelism; both modes touch only this rank's kv heads, so
// they can alternate step by step, and in deterministic order every mode
// gives the single-rank bits. The router owns the block tables.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/defaults.h"
#include "common/model_config.h"
#include "common/step_mode.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "worker/communicator.h"
#include "worker/model_files.h"

namespace shift {

struct EngineOptions {
  // Bytes for the K and V of all layers together; sets the block count.
  int64_t kv_cache_bytes = defaults::kKvCacheBytes;
  int64_t block_size = defaults::kBlockSize;
  // GEMM threads; results do not depend on it.
  int threads = defaults::kThreads;
  // This engine's place in its group. A communicator given to Create
  // overrides them; otherwise one must be attached before a step of a group
  // larger than one.
  int rank = 0;
  int world_size = 1;
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
  // Most likely alternatives to return with the sampled token.
  int32_t top_logprobs = 0;
};

// What the engine sampled for one sequence.
struct EngineSample {
  uint64_t seq_id = 0;
  int32_t token_id = -1;
  float logprob = 0.0f;                        // log-softmax of the token at temperature 1
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs alternatives, best first
  std::vector<float> logits;                   // when asked
};

class Engine {
 public:
  // `comm` (not owned; null for a single rank, or for a rank that attaches
  // one later) joins this engine to a group; every rank must be given the
  // same steps. Shapes the group cannot split are refused here with a clear
  // message.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelFiles& files,
                                                        const EngineOptions& options,
                                                        Communicator* comm = nullptr);

  // Runs one step. The leader (rank 0) returns one EngineSample per
  // sequence with `sample`, in order; other ranks return none.
  absl::StatusOr<std::vector<EngineSample>> Step(const std::vector<SequenceStep>& batch,
                                                 StepMode mode = StepMode::kTensorParallel);

  // Joins (or, with null, leaves) the group's communicator: a group re-forms
  // under a new generation with a new one. Rank and size must stay the same.
  // The KV cache is kept; the caller decides which sequences are still valid.
  absl::Status Attach(Communicator* comm);

  const ModelConfig& config() const { return config_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return options_.block_size; }
  // fp32 bytes of the weights this rank holds: the whole model in every
  // mode (TP reads slices of the same copy).
  uint64_t weight_bytes() const { return weight_bytes_; }
  // Multiply-add FLOPs of every GEMM this engine has run (2·M·N·K each): an
  // exact counter that shows how a mode splits the work.
  uint64_t gemm_flops() const { return gemm_flops_; }
  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

 private:
  struct Layer {
    std::vector<float> input_norm, post_norm, q_bias, k_bias, v_bias;
    kernels::cpu::PackedWeight q, k, v, o, gate, up, down;
    std::vector<float> k_cache, v_cache;
  };

  // Heads a rank owns: kv heads [kv_begin, kv_begin + kv_count) and query
  // heads [q_begin, q_begin + q_count).
  struct Shard {
    int64_t kv_begin, kv_count, q_begin, q_count;
  };
  // The flattened tokens of a step.
  struct Tokens {
    std::vector<int32_t> ids;
    std::vector<int64_t> pos;
    std::vector<size_t> seq;
  };

  Engine(ModelConfig config, EngineOptions options, Communicator* comm);
  absl::Status RequireCommunicator() const;
  Shard ShardOf(int rank) const;
  // The residual stream of tokens [begin, end) through all layers.
  absl::Status LayersTp(const std::vector<SequenceStep>& batch, const Tokens& tokens,
                        std::vector<float>* h);
  absl::Status LayersSp(const std::vector<SequenceStep>& batch, const Tokens& tokens, int64_t begin,
                        int64_t end, std::vector<float>* h);
  // Q (its heads) and K, V (its shard) of `rows` tokens already normed;
  // biases and RoPE applied. Columns follow `shard`.
  void Project(const Layer& l, const std::vector<float>& x, int64_t rows,
               const std::vector<int64_t>& pos, const Shard& shard, std::vector<float>* q,
               std::vector<float>* k, std::vector<float>* v) const;
  // Writes this rank's K/V for all tokens into `l`'s cache and attends its
  // query heads.
  void Attend(Layer& l, const std::vector<SequenceStep>& batch, const Tokens& tokens,
              const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              std::vector<float>* attn);
  absl::Status Load(const Checkpoint& checkpoint);
  absl::Status Validate(const std::vector<SequenceStep>& batch) const;
  // y = x · Wᵀ over `range` (default: all of it); x has `ldx` columns.
  void Gemm(const std::vector<float>& x, int64_t rows, int64_t ldx,
            const kernels::cpu::PackedWeight& w, const kernels::cpu::GemmRange& range,
            std::vector<float>* y) const;

  ModelConfig config_;
  EngineOptions options_;
  Communicator* comm_;
  Shard shard_;
  kernels::cpu::Rope rope_;
  std::vector<float> embedding_, final_norm_;
  kernels::cpu::PackedWeight lm_head_;
  std::vector<Layer> layers_;
  int64_t num_blocks_ = 0;
  uint64_t weight_bytes_ = 0;
  mutable uint64_t gemm_flops_ = 0;
};

}  // namespace shift
