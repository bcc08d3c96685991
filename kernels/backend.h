// The backend interface: the operations a Llama-family model executor needs,
// on memory the backend allocates (the device's; host memory for the CPU
// backend). The executor (worker/model_executor.h) says what a layer does and
// where the collectives go; a backend says how, on its device. Each public
// operation checks its shapes, counts its FLOPs and bytes, then runs the
// backend's kernel (the protected Do* methods a backend implements).
//
// CPU (kernels/cpu/cpu_backend.h: fp32, deterministic) is always there and is
// the reference every other backend is checked against, operation by
// operation (tests/unit/backend_ops_test.cc). CUDA is there when the build
// found nvcc and the machine has a GPU.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/op_params.h"
#include "kernels/tensor.h"

namespace shift::kernels {

// Where the tokens of a step are, as host data: every sequence's new tokens,
// concatenated, with their positions and blocks. Prefill chunks and decodes
// mix freely.
struct StepLayout {
  struct Sequence {
    int64_t first_token = 0;           // index of its first token in the step
    int64_t num_tokens = 0;            // new tokens this step
    int64_t start_position = 0;        // position of its first new token
    std::vector<int32_t> block_table;  // blocks covering positions 0 .. end - 1
  };
  std::vector<int32_t> token_ids;
  std::vector<int64_t> positions;
  std::vector<int32_t> sequence_of_token;  // index into `sequences`
  std::vector<Sequence> sequences;

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
};

// A step's layout as the backend keeps it for the step's operations (a GPU
// backend copies it to the device once).
class StepData {
 public:
  explicit StepData(StepLayout layout) : layout_(std::move(layout)) {}
  virtual ~StepData() = default;
  const StepLayout& layout() const { return layout_; }

 protected:
  friend class Backend;
  StepLayout layout_;
};

// Which part of a GEMM weight W [n][k] a backend holds: the output rows
// [row_begin, row_end) (row_begin on a panel boundary) and the K columns of
// the reduction groups [group_begin, group_begin + group_count) (the whole
// tree or one aligned subtree, as in GemmRange). A rank of a hybrid layout
// holds its TP shard of each sharded weight this way (docs/architecture.md,
// The hybrid layout); GEMM ranges always name the columns and groups of
// the whole weight, so TP over every rank reads views into the shard.
struct WeightPart {
  int64_t n = 0, k = 0;  // the whole weight
  int64_t row_begin = 0, row_end = 0;
  int group_begin = 0, group_count = kReductionGroups;

  static WeightPart Whole(int64_t n, int64_t k) { return {n, k, 0, n, 0, kReductionGroups}; }
  // Rows and K columns held.
  int64_t rows() const { return row_end - row_begin; }
  int64_t cols() const { return k / kReductionGroups * group_count; }
  // Whether this is all of W.
  bool whole() const { return rows() == n && group_count == kReductionGroups; }
};

// A GEMM weight W [n][k] (the Hugging Face [out_features][in_features]
// layout), or a part of it, as the backend packs it: how is the backend's
// business.
class Weight {
 public:
  Weight(const WeightPart& part, DType dtype) : part_(part), dtype_(dtype) {}
  virtual ~Weight() = default;
  // The rows and K columns held (all of W unless it is a part).
  int64_t n() const { return part_.rows(); }
  int64_t k() const { return part_.cols(); }
  // Reduction groups held: K columns per group are k() / groups().
  int groups() const { return part_.group_count; }
  const WeightPart& part() const { return part_; }
  DType dtype() const { return dtype_; }
  // `range` (columns and groups of the whole weight, inside what is held)
  // relative to what is held; n_end resolved.
  GemmRange Local(const GemmRange& range) const {
    GemmRange local = range;
    local.n_begin = range.n_begin - part_.row_begin;
    local.n_end = (range.n_end < 0 ? part_.n : range.n_end) - part_.row_begin;
    local.group_begin = range.group_begin - part_.group_begin;
    return local;
  }

 private:
  WeightPart part_;
  DType dtype_;
};

// The rotary embedding of a model: frequencies for head_dim, theta and an
// optional llama3 scaling, as the backend keeps them.
struct RopeSpec {
  int64_t head_dim = 0;
  double theta = 10000.0;
  std::optional<Llama3Scaling> scaling;
};
class RopeTable {
 public:
  explicit RopeTable(RopeSpec spec) : spec_(std::move(spec)) {}
  virtual ~RopeTable() = default;
  const RopeSpec& spec() const { return spec_; }

 private:
  RopeSpec spec_;
};

// One layer's paged K and V for the kv heads a rank holds, each
// [num_blocks · block_size][kv_heads · head_dim]: the unified layout
// [blocks][block_size][kv-head shard][head_dim] both modes read and write.
// `window` > 0 makes the layer's attention a sliding window: a query at
// position q sees the keys at positions k with 0 <= q - k < window.
struct PagedKv {
  Tensor k, v;
  int64_t block_size = 0, kv_heads = 0, head_dim = 0;
  int64_t window = 0;
};

// One row to sample from, and what to return with the token.
struct SampleRequest {
  SamplingParams params;
  int64_t position = 0;  // where the sampled token will sit (keys the random draw)
  int32_t top_logprobs = 0;
  bool return_logits = false;
};
struct SampleResult {
  int32_t token_id = -1;
  float logprob = 0.0f;                        // log-softmax of the token at temperature 1
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs alternatives, best first
  std::vector<float> logits;                   // when asked
};

// The operations, for the per-operation counters.
enum class Op {
  kEmbedding,
  kRmsNorm,
  kGemm,
  kRope,
  kWriteKv,
  kAttention,
  kSiluMul,
  kCopy,
  kGatherRows,
  kSample,
  kCopyFromHost,
  kCopyToHost,
};
inline constexpr int kNumOps = static_cast<int>(Op::kCopyToHost) + 1;
const char* OpName(Op op);

// What the operations of one kind have done since the backend was made.
// FLOPs count a multiply-add as 2 and any other arithmetic operation
// (exp and sqrt included) as 1; bytes are the least traffic the operation
// needs (each operand read once, each result written once, the KV of a
// sequence read once per step); seconds are the wall time of the calls
// (for a backend that runs asynchronously, the time to enqueue them).
struct OpStats {
  uint64_t calls = 0;
  uint64_t flops = 0;
  uint64_t bytes = 0;
  double seconds = 0;
};

// Device work recorded once and replayed as a whole (a CUDA graph), with
// what its operations counted while it was recorded: each replay adds that
// to the backend's counters, so they stay exact.
class Graph {
 public:
  virtual ~Graph() = default;

 private:
  friend class Backend;
  std::array<OpStats, kNumOps> stats_{};
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  // What a rank reports as its device: "cpu", or e.g. "cuda:0 NVIDIA H100".
  virtual std::string description() const { return DeviceName(device()); }
  // The element type of activations and the KV cache on this backend.
  virtual DType activation_dtype() const = 0;
  // The device's index among this process's CUDA devices; -1 on the CPU.
  virtual int device_index() const { return -1; }
  // A name no other device shares (a GPU's UUID, as nvidia-smi prints it),
  // so ranks can tell whether they share a device; "" on the CPU.
  virtual std::string device_uuid() const { return ""; }
  // The native stream the backend's work is ordered on (a cudaStream_t on
  // CUDA), for a communicator that enqueues on it; null on the CPU.
  virtual void* device_stream() const { return nullptr; }
  // Bytes the device can still allocate (a GPU's free memory); -1 where
  // there is no such bound (host memory).
  virtual int64_t free_memory() const { return -1; }

  // --- Memory. None of these is counted but the copies.
  // rows × cols uninitialised elements (zeros with `zero`); an allocation the
  // device cannot hold is RESOURCE_EXHAUSTED with the numbers.
  virtual absl::StatusOr<Buffer> Allocate(DType dtype, int64_t rows, int64_t cols,
                                          bool zero = false) = 0;
  // `part` of a weight W (WeightPart::Whole for all of it): its
  // part.rows() × part.cols() values, row-major fp32 host memory, packed
  // for GEMMs on this device.
  absl::StatusOr<std::unique_ptr<Weight>> UploadWeight(const float* w, const WeightPart& part);
  // The same as FP8 E4M3 codes (row-major) with one fp32 scale per row, w
  // = code · scale (a checkpoint's compressed-tensors weight). A backend
  // with FP8 GEMMs keeps the codes (activations are then quantized per
  // token at run time); the others compute on the dequantized weights.
  absl::StatusOr<std::unique_ptr<Weight>> UploadWeightFp8(const uint8_t* codes,
                                                          const float* row_scales,
                                                          const WeightPart& part);
  // The same with block scales: `block_scales` holds one fp32 scale per
  // block × block tile of the whole weight W [n][k] (⌈n/block⌉ × ⌈k/block⌉,
  // row-major), and the code of W[i][j] is multiplied by the scale of tile
  // (i / block, j / block), wherever the part's rows and groups cut the
  // tiles. By default (the CPU) the part is dequantized on the host.
  absl::StatusOr<std::unique_ptr<Weight>> UploadWeightFp8Blocks(const uint8_t* codes,
                                                                const float* block_scales,
                                                                int64_t block,
                                                                const WeightPart& part);
  virtual absl::StatusOr<std::unique_ptr<RopeTable>> UploadRope(const RopeSpec& spec) = 0;
  virtual absl::StatusOr<std::unique_ptr<StepData>> PrepareStep(StepLayout layout) = 0;
  // A step whose device copy keeps its addresses, for a recorded graph:
  // UpdateFixedStep refills it in place with a layout of the same shape
  // (tokens, sequences, and every block table as long as the first's).
  virtual absl::StatusOr<std::unique_ptr<StepData>> PrepareFixedStep(StepLayout layout) {
    return PrepareStep(std::move(layout));
  }
  absl::Status UpdateFixedStep(StepData& step, StepLayout layout);

  // --- Graphs. Between BeginCapture and EndCapture operations are
  // recorded, not run (none may wait for the device), and the memory they
  // allocate is set apart for graphs: it is reused by later captures only,
  // never by work outside a graph. Replay runs a graph. UNIMPLEMENTED where
  // the backend has none.
  virtual bool SupportsGraphs() const { return false; }
  absl::Status BeginCapture();
  absl::StatusOr<std::unique_ptr<Graph>> EndCapture();
  absl::Status Replay(const Graph& graph);
  // dst.size() fp32 values from host memory (row-major), converted to dst's dtype.
  absl::Status CopyFromHost(const float* host, const Tensor& dst);
  // src.size() values as fp32 into host memory (row-major).
  absl::Status CopyToHost(const Tensor& src, float* host);

  // --- Operations. Shapes are checked (a mismatch is INVALID_ARGUMENT).
  // out[i] = table[token_ids[first + i]] for out.rows tokens of the step.
  absl::Status Embedding(const Tensor& table, const StepData& step, int64_t first,
                         const Tensor& out);
  // With `add`, residual += add first (written back); then
  // out = residual / sqrt(mean(residual²) + eps) · weight, per row. `out`
  // may be `residual` itself (normalized in place).
  absl::Status RmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight, float eps,
                       const Tensor& out);
  // y = x · Wᵀ over `range` (+ bias, 1 × y.cols, already at the range's
  // first column). x holds the K columns of the range's groups. The range
  // names columns and groups of the whole weight and must lie inside the
  // part `w` holds.
  absl::Status Gemm(const Tensor& x, const Weight& w, const GemmRange& range, const Tensor* bias,
                    const Tensor& y);
  // Rotates x (rows × heads·head_dim) in place for the positions of the
  // step's tokens first .. first + x.rows - 1.
  absl::Status Rope(const Tensor& x, int64_t heads, const RopeTable& rope, const StepData& step,
                    int64_t first);
  // Writes every token's K and V (tokens × kv_heads·head_dim) into its
  // sequence's blocks.
  absl::Status WriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                       const StepData& step);
  // Causal attention of every token's query heads (q: tokens × heads·head_dim;
  // query head h reads kv head h / (heads / kv_heads)) over its sequence's
  // cached positions 0 .. its own (the last cache.window of them with a
  // sliding window), K/V already written.
  absl::Status Attention(const Tensor& q, int64_t heads, const PagedKv& cache, const StepData& step,
                         float scale, const Tensor& out);
  // out = silu(gate) · up, elementwise.
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out);
  // dst = src (same shape; strided views, so it packs and unpacks columns).
  absl::Status Copy(const Tensor& src, const Tensor& dst);
  // dst[i] = src[rows[i]].
  absl::Status GatherRows(const Tensor& src, absl::Span<const int64_t> rows, const Tensor& dst);
  // One token per row of `logits` (fp32, rows × vocab), as each request asks.
  absl::StatusOr<std::vector<SampleResult>> Sample(const Tensor& logits,
                                                   absl::Span<const SampleRequest> requests);

  const OpStats& stats(Op op) const { return stats_[static_cast<int>(op)]; }
  // With `on`, operations count device time rather than the time to enqueue
  // them (a per-operation breakdown): between markers the device records
  // around each one (CUDA events) where the backend has them, collected
  // when a step samples or at FlushOpTimes; otherwise every operation waits
  // for the device (slower, and each small operation then also counts a
  // wait). No graphs are recorded meanwhile.
  void set_op_timing(bool on);
  bool op_timing() const { return synchronous_timing_ || marker_timing_; }
  // Adds the device time of the operations timed by markers so far.
  void FlushOpTimes();

 protected:
  // Waits until the device has done all work enqueued so far (a
  // synchronous backend has nothing to wait for).
  virtual void WaitForDevice() {}
  // Device timing markers (CUDA events): one recorded in the device's queue
  // (-1: this backend has none), and the seconds from marker a to b once
  // the device has passed b (both released).
  virtual int64_t RecordMarker() { return -1; }
  virtual double MarkerSeconds(int64_t a, int64_t b) { return 0; }

  // The uploads, `part` checked.
  virtual absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeight(const float* w,
                                                                 const WeightPart& part) = 0;
  // By default: dequantized, then DoUploadWeight.
  virtual absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeightFp8(const uint8_t* codes,
                                                                    const float* row_scales,
                                                                    const WeightPart& part);
  virtual absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeightFp8Blocks(const uint8_t* codes,
                                                                          const float* block_scales,
                                                                          int64_t block,
                                                                          const WeightPart& part);
  // A fixed step's device copy refilled from `step`'s (new) layout.
  virtual absl::Status DoUpdateFixedStep(StepData& step) { return absl::OkStatus(); }
  virtual absl::Status DoBeginCapture() {
    return absl::UnimplementedError("this backend records no graphs");
  }
  // Ends the capture, also after a failure inside it.
  virtual absl::StatusOr<std::unique_ptr<Graph>> DoEndCapture() {
    return absl::UnimplementedError("this backend records no graphs");
  }
  virtual absl::Status DoReplay(const Graph& graph) {
    return absl::UnimplementedError("this backend records no graphs");
  }

  virtual absl::Status DoCopyFromHost(const float* host, const Tensor& dst) = 0;
  virtual absl::Status DoCopyToHost(const Tensor& src, float* host) = 0;
  virtual absl::Status DoEmbedding(const Tensor& table, const StepData& step, int64_t first,
                                   const Tensor& out) = 0;
  virtual absl::Status DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight,
                                 float eps, const Tensor& out) = 0;
  virtual absl::Status DoGemm(const Tensor& x, const Weight& w, const GemmRange& range,
                              const Tensor* bias, const Tensor& y) = 0;
  virtual absl::Status DoRope(const Tensor& x, int64_t heads, const RopeTable& rope,
                              const StepData& step, int64_t first) = 0;
  virtual absl::Status DoWriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                                 const StepData& step) = 0;
  virtual absl::Status DoAttention(const Tensor& q, int64_t heads, const PagedKv& cache,
                                   const StepData& step, float scale, const Tensor& out) = 0;
  virtual absl::Status DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  virtual absl::Status DoCopy(const Tensor& src, const Tensor& dst) = 0;
  virtual absl::Status DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                                    const Tensor& dst) = 0;
  virtual absl::StatusOr<std::vector<SampleResult>> DoSample(
      const Tensor& logits, absl::Span<const SampleRequest> requests) = 0;

 private:
  class Timer;
  std::array<OpStats, kNumOps> stats_{};
  std::array<OpStats, kNumOps> capture_start_{};  // the counters when capture began
  bool synchronous_timing_ = false, marker_timing_ = false;
  struct Timed {
    int op;
    int64_t start, end;  // markers
  };
  std::vector<Timed> timed_;  // operations whose device time is still to collect
};

// A table of the operations a backend has run: calls, GFLOP, GB moved,
// seconds, each one's share of the time, and the rates (one line per
// operation that ran, then the total).
std::string OpStatsTable(const Backend& backend);

}  // namespace shift::kernels
