#include "kernels/backend.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace shift::kernels {
namespace {

std::string Describe(const Tensor& t) {
  return absl::StrCat(t.rows, " x ", t.cols, " ", std::string(DTypeName(t.dtype)), " on ",
                      DeviceName(t.device));
}

// Each condition of an operation's shape contract, with the operation's name
// and what broke it.
absl::Status Require(bool ok, Op op, std::string_view what) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(OpName(op), ": ", std::string(what)));
}

uint64_t Size(const Tensor& t) { return static_cast<uint64_t>(t.size()); }
uint64_t Bytes(const Tensor& t) { return static_cast<uint64_t>(t.bytes()); }

}  // namespace

const char* OpName(Op op) {
  switch (op) {
    case Op::kEmbedding:
      return "embedding";
    case Op::kRmsNorm:
      return "rms_norm";
    case Op::kGemm:
      return "gemm";
    case Op::kRope:
      return "rope";
    case Op::kWriteKv:
      return "write_kv";
    case Op::kAttention:
      return "attention";
    case Op::kSiluMul:
      return "silu_mul";
    case Op::kCopy:
      return "copy";
    case Op::kGatherRows:
      return "gather_rows";
    case Op::kSample:
      return "sample";
    case Op::kCopyFromHost:
      return "copy_from_host";
    case Op::kCopyToHost:
      return "copy_to_host";
  }
  return "?";
}

// Adds one call's work and time to its operation's counters: wall time,
// or device time between two markers, collected later.
class Backend::Timer {
 public:
  Timer(Backend& backend, OpStats& stats, uint64_t flops, uint64_t bytes)
      : backend_(backend), stats_(stats) {
    if (backend_.synchronous_timing_) backend_.WaitForDevice();
    if (backend_.marker_timing_) marker_ = backend_.RecordMarker();
    start_ = std::chrono::steady_clock::now();
    ++stats_.calls;
    stats_.flops += flops;
    stats_.bytes += bytes;
  }
  ~Timer() {
    if (marker_ >= 0) {
      const int op = static_cast<int>(&stats_ - backend_.stats_.data());
      backend_.timed_.push_back({op, marker_, backend_.RecordMarker()});
      return;
    }
    if (backend_.synchronous_timing_) backend_.WaitForDevice();
    stats_.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  Backend& backend_;
  OpStats& stats_;
  std::chrono::steady_clock::time_point start_;
  int64_t marker_ = -1;
};

void Backend::set_op_timing(bool on) {
  FlushOpTimes();
  synchronous_timing_ = marker_timing_ = false;
  if (!on) return;
  // Markers where the backend has them, else waiting.
  const int64_t probe = RecordMarker();
  if (probe >= 0) {
    MarkerSeconds(probe, probe);
    marker_timing_ = true;
  } else {
    synchronous_timing_ = true;
  }
}

void Backend::FlushOpTimes() {
  for (const Timed& t : timed_) {
    if (t.end >= 0) {
      stats_[t.op].seconds += MarkerSeconds(t.start, t.end);
    } else {
      MarkerSeconds(t.start, t.start);  // releases it
    }
  }
  timed_.clear();
}

absl::Status Backend::CopyFromHost(const float* host, const Tensor& dst) {
  SHIFT_RETURN_IF_ERROR(Require(dst.device == device(), Op::kCopyFromHost,
                                absl::StrCat("destination is ", Describe(dst))));
  Timer timer(*this, stats_[static_cast<int>(Op::kCopyFromHost)], 0, Size(dst) * 4 + Bytes(dst));
  return DoCopyFromHost(host, dst);
}

absl::Status Backend::CopyToHost(const Tensor& src, float* host) {
  SHIFT_RETURN_IF_ERROR(
      Require(src.device == device(), Op::kCopyToHost, absl::StrCat("source is ", Describe(src))));
  Timer timer(*this, stats_[static_cast<int>(Op::kCopyToHost)], 0, Bytes(src) + Size(src) * 4);
  return DoCopyToHost(src, host);
}

absl::Status Backend::Embedding(const Tensor& table, const StepData& step, int64_t first,
                                const Tensor& out) {
  const Op op = Op::kEmbedding;
  SHIFT_RETURN_IF_ERROR(Require(table.cols == out.cols, op,
                                absl::StrCat("table ", Describe(table), ", out ", Describe(out))));
  SHIFT_RETURN_IF_ERROR(Require(first >= 0 && first + out.rows <= step.layout().num_tokens(), op,
                                absl::StrCat("tokens [", first, ", ", first + out.rows, ") of ",
                                             step.layout().num_tokens())));
  Timer timer(*this, stats_[static_cast<int>(op)], 0, 2 * Bytes(out));
  return DoEmbedding(table, step, first, out);
}

absl::Status Backend::RmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight,
                              float eps, const Tensor& out) {
  const Op op = Op::kRmsNorm;
  SHIFT_RETURN_IF_ERROR(
      Require(residual.rows == out.rows && residual.cols == out.cols && weight.size() == out.cols &&
                  (add == nullptr || (add->rows == out.rows && add->cols == out.cols)),
              op,
              absl::StrCat("residual ", Describe(residual), ", weight ", Describe(weight), ", out ",
                           Describe(out))));
  const uint64_t n = Size(out), rows = static_cast<uint64_t>(out.rows);
  uint64_t flops = 4 * n + 2 * rows, bytes = Bytes(residual) + Bytes(weight) + Bytes(out);
  if (add != nullptr) {
    flops += n;
    bytes += Bytes(*add) + Bytes(residual);
  }
  Timer timer(*this, stats_[static_cast<int>(op)], flops, bytes);
  return DoRmsNorm(residual, add, weight, eps, out);
}

absl::Status Backend::Gemm(const Tensor& x, const Weight& w, const GemmRange& range,
                           const Tensor* bias, const Tensor& y) {
  const Op op = Op::kGemm;
  const WeightPart& part = w.part();
  const int64_t n_end = range.n_end < 0 ? part.n : range.n_end;
  const bool groups_ok = (range.group_count == 1 || range.group_count == 2 ||
                          range.group_count == 4 || range.group_count == 8) &&
                         range.group_begin % range.group_count == 0 &&
                         range.group_begin + range.group_count <= kReductionGroups;
  // Inside the part this weight holds.
  const bool held = range.n_begin >= part.row_begin && n_end <= part.row_end &&
                    range.group_begin >= part.group_begin &&
                    range.group_begin + range.group_count <= part.group_begin + part.group_count;
  SHIFT_RETURN_IF_ERROR(
      Require(groups_ok && held && range.n_begin % kPanelWidth == 0 && range.n_begin <= n_end, op,
              absl::StrCat("columns [", range.n_begin, ", ", n_end, ") of ", part.n, ", groups ",
                           range.group_begin, " + ", range.group_count, "; the weight holds rows [",
                           part.row_begin, ", ", part.row_end, "), groups ", part.group_begin,
                           " + ", part.group_count)));
  const int64_t k = part.k / kReductionGroups * range.group_count, cols = n_end - range.n_begin;
  SHIFT_RETURN_IF_ERROR(
      Require(x.cols == k && y.rows == x.rows && y.cols == cols &&
                  (bias == nullptr || bias->size() == cols),
              op,
              absl::StrCat("x ", Describe(x), " against ", k, " K columns; y ", Describe(y),
                           " for ", cols, " columns", bias == nullptr ? "" : "; bias ",
                           bias == nullptr ? "" : Describe(*bias))));
  const uint64_t m = static_cast<uint64_t>(x.rows), mn = m * static_cast<uint64_t>(cols);
  uint64_t flops = 2 * mn * static_cast<uint64_t>(k);
  uint64_t bytes = Bytes(x) + Bytes(y) + static_cast<uint64_t>(cols * k) * DTypeSize(w.dtype());
  if (bias != nullptr) {
    flops += mn;
    bytes += Bytes(*bias);
  }
  Timer timer(*this, stats_[static_cast<int>(op)], flops, bytes);
  return DoGemm(x, w, range, bias, y);
}

absl::Status Backend::Rope(const Tensor& x, int64_t heads, const RopeTable& rope,
                           const StepData& step, int64_t first) {
  const Op op = Op::kRope;
  const int64_t hd = rope.spec().head_dim;
  SHIFT_RETURN_IF_ERROR(Require(heads > 0 && x.cols == heads * hd, op,
                                absl::StrCat("x ", Describe(x), " for ", heads, " heads of ", hd)));
  SHIFT_RETURN_IF_ERROR(Require(
      first >= 0 && first + x.rows <= step.layout().num_tokens(), op,
      absl::StrCat("tokens [", first, ", ", first + x.rows, ") of ", step.layout().num_tokens())));
  const uint64_t rows = static_cast<uint64_t>(x.rows);
  Timer timer(*this, stats_[static_cast<int>(op)], 3 * Size(x) + rows * static_cast<uint64_t>(hd),
              2 * Bytes(x));
  return DoRope(x, heads, rope, step, first);
}

absl::Status Backend::WriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                              const StepData& step) {
  const Op op = Op::kWriteKv;
  const int64_t width = cache.kv_heads * cache.head_dim;
  SHIFT_RETURN_IF_ERROR(Require(
      k.rows == step.layout().num_tokens() && v.rows == k.rows && k.cols == width &&
          v.cols == width && cache.k.cols == width && cache.v.cols == width,
      op,
      absl::StrCat("k ", Describe(k), ", v ", Describe(v), " for ", step.layout().num_tokens(),
                   " tokens of ", cache.kv_heads, " kv heads of ", cache.head_dim)));
  Timer timer(*this, stats_[static_cast<int>(op)], 0, 2 * (Bytes(k) + Bytes(v)));
  return DoWriteKv(cache, k, v, step);
}

absl::Status Backend::Attention(const Tensor& q, int64_t heads, const PagedKv& cache,
                                const StepData& step, float scale, const Tensor& out) {
  const Op op = Op::kAttention;
  const StepLayout& layout = step.layout();
  const int64_t hd = cache.head_dim;
  SHIFT_RETURN_IF_ERROR(Require(
      heads > 0 && cache.kv_heads > 0 && heads % cache.kv_heads == 0 && cache.window >= 0 &&
          q.rows == layout.num_tokens() && q.cols == heads * hd && out.rows == q.rows &&
          out.cols == q.cols,
      op,
      absl::StrCat("q ", Describe(q), ", out ", Describe(out), " for ", layout.num_tokens(),
                   " tokens of ", heads, " heads over ", cache.kv_heads, " kv heads of ", hd)));
  uint64_t flops = 0, bytes = Bytes(q) + Bytes(out);
  const uint64_t per_position = static_cast<uint64_t>(heads * (4 * hd + 3));
  // A sliding window bounds the positions each query reads.
  auto seen = [&](int64_t positions) {
    return cache.window > 0 ? std::min(positions, cache.window) : positions;
  };
  for (int64_t p : layout.positions) flops += per_position * static_cast<uint64_t>(seen(p + 1));
  for (const StepLayout::Sequence& s : layout.sequences) {
    const int64_t context =
        std::min(s.start_position + s.num_tokens, seen(s.start_position + 1) + s.num_tokens - 1);
    bytes += static_cast<uint64_t>(2 * context * cache.kv_heads * hd) * DTypeSize(cache.k.dtype);
  }
  Timer timer(*this, stats_[static_cast<int>(op)], flops, bytes);
  return DoAttention(q, heads, cache, step, scale, out);
}

absl::Status Backend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const Op op = Op::kSiluMul;
  SHIFT_RETURN_IF_ERROR(Require(
      gate.rows == out.rows && gate.cols == out.cols && up.rows == out.rows && up.cols == out.cols,
      op, absl::StrCat("gate ", Describe(gate), ", up ", Describe(up), ", out ", Describe(out))));
  Timer timer(*this, stats_[static_cast<int>(op)], 5 * Size(out),
              Bytes(gate) + Bytes(up) + Bytes(out));
  return DoSiluMul(gate, up, out);
}

absl::Status Backend::Copy(const Tensor& src, const Tensor& dst) {
  const Op op = Op::kCopy;
  SHIFT_RETURN_IF_ERROR(
      Require(src.rows == dst.rows && src.cols == dst.cols && src.dtype == dst.dtype, op,
              absl::StrCat("from ", Describe(src), " to ", Describe(dst))));
  Timer timer(*this, stats_[static_cast<int>(op)], 0, 2 * Bytes(src));
  return DoCopy(src, dst);
}

absl::Status Backend::GatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                                 const Tensor& dst) {
  const Op op = Op::kGatherRows;
  const bool in_range =
      std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r >= 0 && r < src.rows; });
  SHIFT_RETURN_IF_ERROR(
      Require(in_range && dst.rows == static_cast<int64_t>(rows.size()) && dst.cols == src.cols &&
                  dst.dtype == src.dtype,
              op, absl::StrCat(rows.size(), " rows of ", Describe(src), " into ", Describe(dst))));
  Timer timer(*this, stats_[static_cast<int>(op)], 0, 2 * Bytes(dst));
  return DoGatherRows(src, rows, dst);
}

absl::StatusOr<std::vector<SampleResult>> Backend::Sample(
    const Tensor& logits, absl::Span<const SampleRequest> requests) {
  const Op op = Op::kSample;
  SHIFT_RETURN_IF_ERROR(Require(
      logits.dtype == DType::kF32 && logits.cols > 0 &&
          logits.rows == static_cast<int64_t>(requests.size()),
      op, absl::StrCat("logits ", Describe(logits), " for ", requests.size(), " requests")));
  absl::StatusOr<std::vector<SampleResult>> sampled;
  {
    Timer timer(*this, stats_[static_cast<int>(op)], 3 * Size(logits), Bytes(logits));
    sampled = DoSample(logits, requests);
  }
  // The step's end: its operations' device times are in.
  if (marker_timing_) FlushOpTimes();
  return sampled;
}

namespace {

// Why `part` is not a part a backend can hold; empty when it is.
std::string WeightPartProblem(const WeightPart& part) {
  const int c = part.group_count;
  if (part.n < 1 || part.k < 1 || part.k % kReductionGroups != 0) {
    return absl::StrCat("a GEMM weight needs rows and a K (", part.k, ") that is a multiple of ",
                        kReductionGroups);
  }
  if (part.row_begin < 0 || part.row_begin >= part.row_end || part.row_end > part.n ||
      part.row_begin % kPanelWidth != 0) {
    return absl::StrCat("rows [", part.row_begin, ", ", part.row_end, ") of ", part.n,
                        " are not a range that starts on a ", kPanelWidth, "-row panel");
  }
  if ((c != 1 && c != 2 && c != 4 && c != 8) || part.group_begin % c != 0 ||
      part.group_begin + c > kReductionGroups) {
    return absl::StrCat("groups ", part.group_begin, " + ", c, " are not an aligned subtree");
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Weight>> Backend::UploadWeight(const float* w,
                                                              const WeightPart& part) {
  if (std::string why = WeightPartProblem(part); !why.empty()) {
    return absl::InvalidArgumentError(why);
  }
  return DoUploadWeight(w, part);
}

absl::StatusOr<std::unique_ptr<Weight>> Backend::UploadWeightFp8(const uint8_t* codes,
                                                                 const float* row_scales,
                                                                 const WeightPart& part) {
  if (std::string why = WeightPartProblem(part); !why.empty()) {
    return absl::InvalidArgumentError(why);
  }
  return DoUploadWeightFp8(codes, row_scales, part);
}

absl::StatusOr<std::unique_ptr<Weight>> Backend::DoUploadWeightFp8(const uint8_t* codes,
                                                                   const float* row_scales,
                                                                   const WeightPart& part) {
  const int64_t n = part.rows(), k = part.cols();
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) w[r * k + c] = F8E4M3ToF32(codes[r * k + c]) * row_scales[r];
  }
  return DoUploadWeight(w.data(), part);
}

absl::StatusOr<std::unique_ptr<Weight>> Backend::UploadWeightFp8Blocks(const uint8_t* codes,
                                                                       const float* block_scales,
                                                                       int64_t block,
                                                                       const WeightPart& part) {
  if (std::string why = WeightPartProblem(part); !why.empty()) {
    return absl::InvalidArgumentError(why);
  }
  if (block <= 0) return absl::InvalidArgumentError("FP8 block scales need a positive block size");
  return DoUploadWeightFp8Blocks(codes, block_scales, block, part);
}

absl::StatusOr<std::unique_ptr<Weight>> Backend::DoUploadWeightFp8Blocks(const uint8_t* codes,
                                                                         const float* block_scales,
                                                                         int64_t block,
                                                                         const WeightPart& part) {
  const int64_t n = part.rows(), k = part.cols(), tiles = (part.k + block - 1) / block;
  const int64_t first_col = part.k / kReductionGroups * part.group_begin;
  std::vector<float> w(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r) {
    const float* tile_row = block_scales + (part.row_begin + r) / block * tiles;
    for (int64_t c = 0; c < k; ++c) {
      w[r * k + c] = F8E4M3ToF32(codes[r * k + c]) * tile_row[(first_col + c) / block];
    }
  }
  return DoUploadWeight(w.data(), part);
}

absl::Status Backend::UpdateFixedStep(StepData& step, StepLayout layout) {
  const StepLayout& old = step.layout();
  bool same = layout.num_tokens() == old.num_tokens() &&
              layout.positions.size() == old.positions.size() &&
              layout.sequence_of_token.size() == old.sequence_of_token.size() &&
              layout.sequences.size() == old.sequences.size();
  for (size_t s = 0; same && s < layout.sequences.size(); ++s) {
    same = layout.sequences[s].block_table.size() == old.sequences[s].block_table.size();
  }
  if (!same) {
    return absl::InvalidArgumentError(
        "a fixed step is refilled only with a layout of its own shape");
  }
  step.layout_ = std::move(layout);
  return DoUpdateFixedStep(step);
}

absl::Status Backend::BeginCapture() {
  if (op_timing()) {
    return absl::FailedPreconditionError(
        "graphs cannot be recorded while every operation waits for the device (op timing)");
  }
  SHIFT_RETURN_IF_ERROR(DoBeginCapture());
  capture_start_ = stats_;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Graph>> Backend::EndCapture() {
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Graph> graph, DoEndCapture());
  for (int i = 0; i < kNumOps; ++i) {
    OpStats& d = graph->stats_[i];
    d.calls = stats_[i].calls - capture_start_[i].calls;
    d.flops = stats_[i].flops - capture_start_[i].flops;
    d.bytes = stats_[i].bytes - capture_start_[i].bytes;
    d.seconds = 0;  // enqueueing, not running: a replay's time is its own
  }
  return graph;
}

absl::Status Backend::Replay(const Graph& graph) {
  const auto start = std::chrono::steady_clock::now();
  SHIFT_RETURN_IF_ERROR(DoReplay(graph));
  // The replay's time goes to the operations in proportion to their calls.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t calls = 0;
  for (const OpStats& d : graph.stats_) calls += d.calls;
  for (int i = 0; i < kNumOps; ++i) {
    const OpStats& d = graph.stats_[i];
    stats_[i].calls += d.calls;
    stats_[i].flops += d.flops;
    stats_[i].bytes += d.bytes;
    if (calls > 0) stats_[i].seconds += seconds * static_cast<double>(d.calls) / calls;
  }
  return absl::OkStatus();
}

std::string OpStatsTable(const Backend& backend) {
  OpStats total;
  for (int i = 0; i < kNumOps; ++i) {
    const OpStats& s = backend.stats(static_cast<Op>(i));
    total.calls += s.calls;
    total.flops += s.flops;
    total.bytes += s.bytes;
    total.seconds += s.seconds;
  }
  std::string out = absl::StrFormat("%-15s %9s %10s %9s %9s %6s %9s %8s\n", "op", "calls", "GFLOP",
                                    "GB", "seconds", "time", "GFLOP/s", "GB/s");
  auto line = [&](const char* name, const OpStats& s) {
    const double seconds = std::max(s.seconds, 1e-12);
    absl::StrAppendFormat(&out, "%-15s %9d %10.3f %9.3f %9.3f %5.1f%% %9.2f %8.2f\n", name, s.calls,
                          s.flops / 1e9, s.bytes / 1e9, s.seconds,
                          100.0 * s.seconds / std::max(total.seconds, 1e-12),
                          s.flops / 1e9 / seconds, s.bytes / 1e9 / seconds);
  };
  for (int i = 0; i < kNumOps; ++i) {
    const OpStats& s = backend.stats(static_cast<Op>(i));
    if (s.calls > 0) line(OpName(static_cast<Op>(i)), s);
  }
  line("total", total);
  return out;
}

}  // namespace shift::kernels
