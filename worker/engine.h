// The engine of one rank: a backend for its device (kernels/backend.h) and
// the model executor on it (worker/model_executor.h), which holds the
// weights (one copy, which TP slices by panel and K ranges) and the paged KV
// cache of its kv-head shard. It runs one step at a time: a batch of
// sequences, each with new tokens, a start position and a block table
// (prefill chunks and decodes mixed), returning sampled tokens and, when
// asked, logits. With a Communicator of P ranks, each step runs in tensor
// or sequence parallelism; both modes touch only this rank's kv heads, so
// they can alternate step by step, and on the CPU backend every mode gives
// the single-rank bits. The router owns the block tables.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/defaults.h"
#include "common/model_config.h"
#include "common/step_mode.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "worker/communicator.h"
#include "worker/model_executor.h"
#include "worker/model_files.h"

namespace shift {

struct EngineOptions {
  kernels::Device device = kernels::Device::kCpu;
  // Bytes for the K and V of all layers together; sets the block count.
  int64_t kv_cache_bytes = defaults::kKvCacheBytes;
  int64_t block_size = defaults::kBlockSize;
  // With the CUDA device: which GPU (-1: the rank index modulo the GPUs).
  int cuda_device = -1;
  // CPU backend threads; results do not depend on it.
  int threads = defaults::kThreads;
  // This engine's place in its group. A communicator given to Create
  // overrides them; otherwise one must be attached before a step of a group
  // larger than one.
  int rank = 0;
  int world_size = 1;
  // The base mode's Ulysses degree (docs/architecture.md, The hybrid
  // layout): 0 for world_size (pure SP: every rank holds the whole model);
  // a rank holds 1/(world_size / sp_degree) of the sharded weights.
  int sp_degree = 0;
  GroupLayout layout() const { return {world_size, sp_degree > 0 ? sp_degree : world_size}; }
  // Count each operation's device time (kernels/backend.h, set_op_timing:
  // a per-operation breakdown; no graphs then).
  bool op_timing = false;
  // Decode steps of one rank on a backend with graphs (CUDA) are padded to
  // a batch bucket and replayed from a graph recorded per bucket, up to
  // this batch (worker/model_executor.h, DecodeGraphs); enforce_eager runs
  // every step as it comes.
  bool enforce_eager = false;
  int64_t max_graph_batch = 256;
  // Groups whose collectives record into graphs (NCCL) replay whole decode
  // steps, collectives inside (untested on several GPUs).
  bool graphs_with_collectives = false;
  // Without graphs, still pad decode batches to their buckets (tests the
  // padding on the CPU).
  bool pad_decodes = false;
  // FP8 checkpoints on CUDA: FP8 GEMMs (sm_89+), or bf16 on the
  // dequantized weights (kernels/backend.h, BackendOptions).
  bool fp8_gemm = true;
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
  kernels::SamplingParams sampling;
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
  // The same on a given backend (options.device and threads are then unused).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelFiles& files,
                                                        const EngineOptions& options,
                                                        Communicator* comm,
                                                        std::unique_ptr<kernels::Backend> backend);

  // Runs one step. The leader (rank 0) returns one EngineSample per
  // sequence with `sample`, in order; other ranks return none. A decode's
  // input may be kPendingToken (core/scheduler.h: the step was planned
  // ahead of the previous one's results): it is the token the leader
  // sampled for that sequence in the previous step, which the leader
  // broadcasts to the group first (counted with the gather's traffic).
  absl::StatusOr<std::vector<EngineSample>> Step(const std::vector<SequenceStep>& batch,
                                                 StepMode mode = StepMode::kTensorParallel);

  // Joins (or, with null, leaves) the group's communicator: a group re-forms
  // under a new generation with a new one. Rank and size must stay the same.
  // The KV cache is kept; the caller decides which sequences are still valid.
  absl::Status Attach(Communicator* comm);

  const ModelConfig& config() const { return config_; }
  int64_t num_blocks() const { return executor_->num_blocks(); }
  // Decode graphs recorded so far (padded fixed steps, without graphs).
  int64_t num_decode_graphs() const { return executor_->num_decode_graphs(); }
  int64_t block_size() const { return options_.block_size; }
  // fp32 bytes of the weights this rank holds: its TP shard, read by both
  // modes (worker/model_executor.h).
  uint64_t weight_bytes() const { return executor_->weight_bytes(); }
  // Of an FP8 checkpoint: its codes and the scales covering them.
  uint64_t fp8_weight_bytes() const { return executor_->fp8_weight_bytes(); }
  // What the collectives of each group have moved (eager steps: a decode
  // step replayed from a graph is not attributed).
  const CollectiveTraffic& traffic(ModelExecutor::CollectiveGroup group) const {
    return executor_->traffic(group);
  }
  // FLOPs of every GEMM this engine has run (2·M·N·K each, plus M·N for a
  // bias): an exact counter that shows how a mode splits the work.
  uint64_t gemm_flops() const { return backend_->stats(kernels::Op::kGemm).flops; }
  // Per-operation work and time (kernels/backend.h, OpStats).
  const kernels::Backend& backend() const { return *backend_; }
  // For a communicator that copies through this backend (host staging).
  kernels::Backend* mutable_backend() { return backend_.get(); }
  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

 private:
  Engine(ModelConfig config, EngineOptions options, Communicator* comm,
         std::unique_ptr<kernels::Backend> backend);
  absl::Status Validate(const std::vector<SequenceStep>& batch) const;
  // Replaces every kPendingToken of `batch` by the leader's token from
  // `previous` (its samples of the step before), broadcast from it.
  absl::Status ResolvePending(const std::map<uint64_t, int32_t>& previous,
                              std::vector<SequenceStep>& batch);

  ModelConfig config_;
  EngineOptions options_;
  Communicator* comm_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<ModelExecutor> executor_;
  // The leader's tokens of its last step, by sequence.
  std::map<uint64_t, int32_t> previous_samples_;
};

}  // namespace shift
