// A test-only backend: records every operation the executor asks for, with
// the shapes of its tensors, and forwards it to the CPU backend. An engine
// on it giving the CPU engine's bits shows that the executor reaches its
// device through the backend interface alone.
//
// With `graphs`, it also records graphs as a GPU does: between BeginCapture
// and EndCapture each operation is kept (its arguments copied) instead of
// run, and a replay runs them in order; memory allocated meanwhile is kept
// until the backend goes, as graph memory is. So the CPU runs the executor's
// graph paths (worker/model_executor.h, DecodeGraphs) with CPU arithmetic.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace shift::testing {

class RecordingBackend final : public kernels::Backend {
 public:
  struct Call {
    kernels::Op op;
    std::string shapes;  // "rows x cols" of each tensor argument, in order
  };

  explicit RecordingBackend(bool graphs = false)
      : inner_(std::make_unique<kernels::cpu::CpuBackend>(1)), graphs_(graphs) {}

  const std::vector<Call>& calls() const { return calls_; }
  // Stands in for a GPU's free memory (-1: none, as the CPU).
  void set_free_memory(int64_t bytes) { free_memory_ = bytes; }
  int64_t free_memory() const override { return free_memory_; }
  // Operations run by replays.
  int64_t replayed() const { return replayed_; }

  kernels::Device device() const override { return inner_->device(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  absl::StatusOr<kernels::Buffer> Allocate(DType dtype, int64_t rows, int64_t cols,
                                           bool zero) override {
    SHIFT_ASSIGN_OR_RETURN(kernels::Buffer buffer, inner_->Allocate(dtype, rows, cols, zero));
    if (!capturing_) return buffer;
    // Graph memory: kept for every replay.
    kernels::Tensor tensor = buffer.tensor();
    graph_memory_.push_back(std::move(buffer));
    return kernels::Buffer(tensor, [](void*) {});
  }
  bool SupportsGraphs() const override { return graphs_; }
  absl::StatusOr<std::unique_ptr<kernels::RopeTable>> UploadRope(
      const kernels::RopeSpec& spec) override {
    return inner_->UploadRope(spec);
  }
  absl::StatusOr<std::unique_ptr<kernels::StepData>> PrepareStep(
      kernels::StepLayout layout) override {
    return inner_->PrepareStep(std::move(layout));
  }

 protected:
  using Tensor = kernels::Tensor;

  absl::StatusOr<std::unique_ptr<kernels::Weight>> DoUploadWeight(
      const float* w, const kernels::WeightPart& part) override {
    return inner_->UploadWeight(w, part);
  }

  absl::Status DoCopyFromHost(const float* host, const Tensor& dst) override {
    Record(kernels::Op::kCopyFromHost, {&dst});
    return inner_->CopyFromHost(host, dst);
  }
  absl::Status DoCopyToHost(const Tensor& src, float* host) override {
    Record(kernels::Op::kCopyToHost, {&src});
    return inner_->CopyToHost(src, host);
  }
  absl::Status DoEmbedding(const Tensor& table, const kernels::StepData& step, int64_t first,
                           const Tensor& out) override {
    Record(kernels::Op::kEmbedding, {&table, &out});
    return Run([=, this, &step] { return inner_->Embedding(table, step, first, out); });
  }
  absl::Status DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight, float eps,
                         const Tensor& out) override {
    Record(kernels::Op::kRmsNorm, {&residual, add, &weight, &out});
    const std::optional<Tensor> added = add ? std::optional<Tensor>(*add) : std::nullopt;
    return Run([=, this] {
      return inner_->RmsNorm(residual, added ? &*added : nullptr, weight, eps, out);
    });
  }
  absl::Status DoGemm(const Tensor& x, const kernels::Weight& w, const kernels::GemmRange& range,
                      const Tensor* bias, const Tensor& y) override {
    Record(kernels::Op::kGemm, {&x, bias, &y});
    const std::optional<Tensor> b = bias ? std::optional<Tensor>(*bias) : std::nullopt;
    return Run([=, this, &w] { return inner_->Gemm(x, w, range, b ? &*b : nullptr, y); });
  }
  absl::Status DoRope(const Tensor& x, int64_t heads, const kernels::RopeTable& rope,
                      const kernels::StepData& step, int64_t first) override {
    Record(kernels::Op::kRope, {&x});
    return Run([=, this, &rope, &step] { return inner_->Rope(x, heads, rope, step, first); });
  }
  absl::Status DoWriteKv(const kernels::PagedKv& cache, const Tensor& k, const Tensor& v,
                         const kernels::StepData& step) override {
    Record(kernels::Op::kWriteKv, {&k, &v});
    return Run([=, this, &step] { return inner_->WriteKv(cache, k, v, step); });
  }
  absl::Status DoAttention(const Tensor& q, int64_t heads, const kernels::PagedKv& cache,
                           const kernels::StepData& step, float scale, const Tensor& out) override {
    Record(kernels::Op::kAttention, {&q, &out});
    return Run([=, this, &step] { return inner_->Attention(q, heads, cache, step, scale, out); });
  }
  absl::Status DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    Record(kernels::Op::kSiluMul, {&gate, &up, &out});
    return Run([=, this] { return inner_->SiluMul(gate, up, out); });
  }
  absl::Status DoCopy(const Tensor& src, const Tensor& dst) override {
    Record(kernels::Op::kCopy, {&src, &dst});
    return Run([=, this] { return inner_->Copy(src, dst); });
  }
  absl::Status DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                            const Tensor& dst) override {
    Record(kernels::Op::kGatherRows, {&src, &dst});
    return Run([=, this, rows = std::vector<int64_t>(rows.begin(), rows.end())] {
      return inner_->GatherRows(src, rows, dst);
    });
  }
  absl::StatusOr<std::vector<kernels::SampleResult>> DoSample(
      const Tensor& logits, absl::Span<const kernels::SampleRequest> requests) override {
    Record(kernels::Op::kSample, {&logits});
    return inner_->Sample(logits, requests);
  }

  absl::Status DoBeginCapture() override {
    if (!graphs_) return Backend::DoBeginCapture();
    if (capturing_) return absl::FailedPreconditionError("a capture is already under way");
    capturing_ = true;
    recording_.clear();
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<kernels::Graph>> DoEndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("no capture is under way");
    capturing_ = false;
    auto graph = std::make_unique<Recorded>();
    graph->ops = std::move(recording_);
    recording_.clear();
    return std::unique_ptr<kernels::Graph>(std::move(graph));
  }
  absl::Status DoReplay(const kernels::Graph& graph) override {
    for (const auto& op : static_cast<const Recorded&>(graph).ops) {
      SHIFT_RETURN_IF_ERROR(op());
      ++replayed_;
    }
    return absl::OkStatus();
  }

 private:
  struct Recorded final : kernels::Graph {
    std::vector<std::function<absl::Status()>> ops;
  };

  // Runs `op` now, or keeps it for the graph being recorded.
  absl::Status Run(std::function<absl::Status()> op) {
    if (!capturing_) return op();
    recording_.push_back(std::move(op));
    return absl::OkStatus();
  }

  void Record(kernels::Op op, std::initializer_list<const Tensor*> tensors) {
    Call call{op, ""};
    for (const Tensor* t : tensors) {
      if (t != nullptr)
        absl::StrAppend(&call.shapes, call.shapes.empty() ? "" : ", ", t->rows, "x", t->cols);
    }
    calls_.push_back(std::move(call));
  }

  std::unique_ptr<kernels::Backend> inner_;
  std::vector<Call> calls_;
  bool graphs_;
  int64_t free_memory_ = -1;
  bool capturing_ = false;
  std::vector<std::function<absl::Status()>> recording_;
  std::vector<kernels::Buffer> graph_memory_;
  int64_t replayed_ = 0;
};

}  // namespace shift::testing
