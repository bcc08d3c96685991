// The Llama-family model, written once over the backend interface
// (kernels/backend.h): the layer sequence; the TP and SP split of each
// layer and where each collective goes; kv-head replication when there are
// fewer kv heads than ranks; KV writes into the paged layout both modes
// share; logits only for the rows that sample, gathered on the leader. It
// owns the weights and this rank's KV cache, on the backend's device, and
// never touches device memory itself: every computation is a backend
// operation, every exchange a Communicator call.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/step_mode.h"
#include "kernels/backend.h"
#include "worker/communicator.h"
#include "worker/piecewise_graph.h"

namespace shift {

// Heads a rank owns: kv heads [kv_begin, kv_begin + kv_count) and query
// heads [q_begin, q_begin + q_count).
struct HeadShard {
  int64_t kv_begin, kv_count, q_begin, q_count;
};

// How a single rank runs steps of decodes only (one new token per
// sequence, every one sampled).
struct DecodeGraphs {
  enum Mode {
    kOff,       // like any other step
    kPadded,    // padded to a batch bucket on a fixed step, run as usual
    kCaptured,  // the same, recorded once per bucket as a graph and replayed
  };
  Mode mode = kOff;
  // The largest batch run this way; larger decode batches run as usual.
  int64_t max_batch = 256;
  // Groups of several ranks record a step in pieces between collectives,
  // which run eagerly between the pieces' replays
  // (worker/piecewise_graph.h). With `with_collectives`, a group whose
  // communicator records into graphs (NCCL) records the whole step,
  // collectives inside, instead (not yet run on several GPUs).
  bool with_collectives = false;
};

// The batch buckets decodes are padded to: 1, 2, 4, then steps of a
// quarter of the power of two below (8, 10, 12, 14, 16, 20, ...), and
// `max_batch` itself: a batch of n >= 8 pads at most n / 4 rows.
std::vector<int64_t> DecodeBuckets(int64_t max_batch);

class ModelExecutor {
 public:
  // Checks that a group of `world_size` ranks can split the model (a clear
  // message naming `dir` when not), loads the weights onto `backend` (not
  // owned; outlives the executor) and allocates the KV blocks that fit in
  // `kv_cache_bytes` (one of them, with decode graphs, kept apart for the
  // padding rows).
  // `layout` (its world size the group's) says which shard of the
  // weights this rank holds (docs/architecture.md, The hybrid layout).
  static absl::StatusOr<std::unique_ptr<ModelExecutor>> Create(
      const std::string& dir, const ModelConfig& config, const Checkpoint& checkpoint,
      kernels::Backend* backend, int rank, GroupLayout layout, int64_t kv_cache_bytes,
      int64_t block_size, DecodeGraphs graphs = {});

  // Runs one step of the tokens in `layout` (already validated) in `mode`
  // over `comm` (null for one rank). `sample_tokens` are the step tokens
  // whose next token is sampled, `requests` what to sample for each. The
  // leader (rank 0) returns one result per request; other ranks none.
  absl::StatusOr<std::vector<kernels::SampleResult>> Step(
      kernels::StepLayout layout, absl::Span<const int64_t> sample_tokens,
      absl::Span<const kernels::SampleRequest> requests, StepMode mode, Communicator* comm);

  int64_t num_blocks() const { return num_blocks_; }
  // Decode graphs recorded (or, padded, fixed steps prepared) so far.
  int64_t num_decode_graphs() const { return static_cast<int64_t>(decode_.size()); }
  // Forgets every decode graph (they hold the old group's communicator when
  // a group re-forms).
  void ResetDecodeGraphs() { decode_.clear(); }
  // fp32 bytes of the weights this rank holds: its TP shard (1/tp) of the
  // projections and the LM head, and the embedding, norms and biases whole;
  // both modes read the same copy.
  uint64_t weight_bytes() const { return weight_bytes_; }
  // Of an FP8 checkpoint, the bytes of the quantized weights this rank
  // holds as stored: its E4M3 codes, and the fp32 scales that cover them
  // (one per row held, or each block x block tile its rows and columns
  // touch, cut or whole). 0 for other checkpoints.
  uint64_t fp8_weight_bytes() const { return fp8_weight_bytes_; }
  // What this rank's collectives have moved since it was made, by the
  // group they run in: the base mode's all-to-alls (its Ulysses group), the
  // all-reduces (TP over all ranks, or the base mode's TP subgroup), and
  // the logits' gather to the leader (the whole group).
  enum CollectiveGroup { kUlyssesGroup, kTpGroup, kGatherGroup, kNumCollectiveGroups };
  static const char* CollectiveGroupName(CollectiveGroup group);
  const CollectiveTraffic& traffic(CollectiveGroup group) const { return traffic_[group]; }
  // Adds what a communicator moved between `then` and `now` to `group`
  // (the engine's broadcast of the leader's tokens goes with the gather).
  void CountTraffic(CollectiveGroup group, const CollectiveTraffic& then,
                    const CollectiveTraffic& now);
  // The heads rank `r` of this group owns (TP over all ranks; the KV
  // cache's shard in every mode).
  HeadShard ShardOf(int r) const { return HeadsOf(r, world_size_); }
  // The heads of part `index` of the model split `parts` ways: a rank's
  // own heads (parts = P), or the heads of TP shard j (parts = tp).
  HeadShard HeadsOf(int64_t index, int64_t parts) const;

 private:
  struct Layer {
    kernels::Buffer input_norm, post_norm, q_bias, k_bias, v_bias, q_norm, k_norm;
    std::unique_ptr<kernels::Weight> q, k, v, o, gate, up, down;
    kernels::PagedKv kv;
    kernels::Buffer k_cache, v_cache;
  };
  // What the layers of one step share.
  struct StepContext {
    const kernels::StepData* step;
    Communicator* comm;     // the whole group
    Communicator* ulysses;  // the base mode's Ulysses group (the same shard)
    Communicator* tp;       // the base mode's TP subgroup (the same tokens); null when tp = 1
    bool sp;                // the base mode (else TP over all ranks)
    int64_t begin, end;     // the tokens whose residual stream this rank holds
  };

  // A decode bucket's fixed step, its graph (when recorded) and where the
  // graph leaves the logits.
  struct DecodeGraph {
    std::unique_ptr<kernels::StepData> step;
    std::unique_ptr<kernels::Graph> graph;  // the whole step, or
    std::vector<GraphPiece> pieces;         // its pieces between collectives
    kernels::Tensor logits;
  };

  ModelExecutor(ModelConfig config, kernels::Backend* backend, int rank, GroupLayout layout,
                DecodeGraphs graphs);
  // The vocabulary rows [begin, end) of LM-head part `index` of `parts`
  // (whole panels; TP over P ranks views into the shards of parts = tp).
  std::pair<int64_t, int64_t> VocabOf(int64_t index, int64_t parts) const;
  // The layers and the logits of a prepared step (the leader's logits; an
  // empty buffer elsewhere).
  absl::StatusOr<kernels::Buffer> Forward(const kernels::StepData& step,
                                          absl::Span<const int64_t> sample_tokens, StepMode mode,
                                          Communicator* comm);
  // Whether a step runs through DecodeStep.
  bool IsGraphDecode(const kernels::StepLayout& layout,
                     absl::Span<const int64_t> sample_tokens) const;
  // A decode step padded to its bucket on a fixed step, recorded as a
  // graph the first time (kCaptured) and replayed.
  absl::StatusOr<std::vector<kernels::SampleResult>> DecodeStep(
      kernels::StepLayout layout, absl::Span<const kernels::SampleRequest> requests, StepMode mode,
      Communicator* comm);
  // Records g's step: a whole graph (not run), or pieces between
  // collectives (run as they are recorded).
  absl::Status Record(DecodeGraph& g, absl::Span<const int64_t> rows, StepMode mode,
                      Communicator* comm);
  // The leader's tokens from the first n rows of `logits`.
  absl::StatusOr<std::vector<kernels::SampleResult>> Sample(
      const kernels::Tensor& logits, int64_t n, absl::Span<const kernels::SampleRequest> requests);
  absl::Status Load(const Checkpoint& checkpoint);
  absl::Status AllocateKv(int64_t kv_cache_bytes, int64_t block_size);
  absl::StatusOr<kernels::Buffer> Allocate(int64_t rows, int64_t cols, bool zero = false);
  // Through all layers; `h` is the residual stream of the context's tokens,
  // `delta` receives the last layer's output, still to be added to it.
  absl::Status LayersTp(const StepContext& ctx, const kernels::Tensor& h,
                        const kernels::Tensor& delta);
  absl::Status LayersSp(const StepContext& ctx, const kernels::Tensor& h,
                        const kernels::Tensor& delta);
  // Q (the shard's query heads) and K, V (its kv heads) of x's tokens, the
  // step's tokens from `first` on, with biases, per-head norms and RoPE.
  absl::Status Project(const Layer& l, const kernels::Tensor& x, const HeadShard& shard,
                       const kernels::StepData& step, int64_t first, const kernels::Tensor& q,
                       const kernels::Tensor& k, const kernels::Tensor& v);
  // Writes this rank's K/V of every step token into the cache and attends
  // its query heads.
  absl::Status Attend(const Layer& l, const kernels::StepData& step, const kernels::Tensor& q,
                      const kernels::Tensor& k, const kernels::Tensor& v,
                      const kernels::Tensor& out);
  // The logits of the sampled rows, whole, on the leader (an empty buffer
  // elsewhere).
  absl::StatusOr<kernels::Buffer> Logits(const StepContext& ctx, const kernels::Tensor& h,
                                         const kernels::Tensor& delta,
                                         absl::Span<const int64_t> sample_tokens);

  ModelConfig config_;
  kernels::Backend* backend_;
  int rank_, world_size_;
  GroupLayout layout_;
  HeadShard shard_;         // this rank's heads
  HeadShard weight_heads_;  // the heads of its TP shard of the weights
  std::unique_ptr<kernels::RopeTable> rope_;
  kernels::Buffer embedding_, final_norm_;
  std::unique_ptr<kernels::Weight> lm_head_;
  std::vector<Layer> layers_;
  int64_t num_blocks_ = 0;
  uint64_t weight_bytes_ = 0;
  uint64_t fp8_weight_bytes_ = 0;
  DecodeGraphs graphs_;
  std::vector<int64_t> buckets_;
  int32_t scratch_block_ = -1;  // where padding rows write their K/V
  CollectiveTraffic traffic_[kNumCollectiveGroups];
  // By (mode, bucket, table width).
  std::map<std::tuple<StepMode, int64_t, int64_t>, DecodeGraph> decode_;
};

}  // namespace shift
