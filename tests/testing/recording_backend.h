// A test-only backend: records every operation the executor asks for, with
// the shapes of its tensors, and forwards it to the CPU backend. An engine
// on it giving the CPU engine's bits shows that the executor reaches its
// device through the backend interface alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace shift::testing {

class RecordingBackend final : public kernels::Backend {
 public:
  struct Call {
    kernels::Op op;
    std::string shapes;  // "rows x cols" of each tensor argument, in order
  };

  RecordingBackend() : inner_(std::make_unique<kernels::cpu::CpuBackend>(1)) {}

  const std::vector<Call>& calls() const { return calls_; }

  kernels::Device device() const override { return inner_->device(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  absl::StatusOr<kernels::Buffer> Allocate(DType dtype, int64_t rows, int64_t cols,
                                           bool zero) override {
    return inner_->Allocate(dtype, rows, cols, zero);
  }
  absl::StatusOr<std::unique_ptr<kernels::Weight>> UploadWeight(const float* w, int64_t n,
                                                                int64_t k) override {
    return inner_->UploadWeight(w, n, k);
  }
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
    return inner_->Embedding(table, step, first, out);
  }
  absl::Status DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight, float eps,
                         const Tensor& out) override {
    Record(kernels::Op::kRmsNorm, {&residual, add, &weight, &out});
    return inner_->RmsNorm(residual, add, weight, eps, out);
  }
  absl::Status DoGemm(const Tensor& x, const kernels::Weight& w, const kernels::GemmRange& range,
                      const Tensor* bias, const Tensor& y) override {
    Record(kernels::Op::kGemm, {&x, bias, &y});
    return inner_->Gemm(x, w, range, bias, y);
  }
  absl::Status DoRope(const Tensor& x, int64_t heads, const kernels::RopeTable& rope,
                      const kernels::StepData& step, int64_t first) override {
    Record(kernels::Op::kRope, {&x});
    return inner_->Rope(x, heads, rope, step, first);
  }
  absl::Status DoWriteKv(const kernels::PagedKv& cache, const Tensor& k, const Tensor& v,
                         const kernels::StepData& step) override {
    Record(kernels::Op::kWriteKv, {&k, &v});
    return inner_->WriteKv(cache, k, v, step);
  }
  absl::Status DoAttention(const Tensor& q, int64_t heads, const kernels::PagedKv& cache,
                           const kernels::StepData& step, float scale, const Tensor& out) override {
    Record(kernels::Op::kAttention, {&q, &out});
    return inner_->Attention(q, heads, cache, step, scale, out);
  }
  absl::Status DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    Record(kernels::Op::kSiluMul, {&gate, &up, &out});
    return inner_->SiluMul(gate, up, out);
  }
  absl::Status DoCopy(const Tensor& src, const Tensor& dst) override {
    Record(kernels::Op::kCopy, {&src, &dst});
    return inner_->Copy(src, dst);
  }
  absl::Status DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                            const Tensor& dst) override {
    Record(kernels::Op::kGatherRows, {&src, &dst});
    return inner_->GatherRows(src, rows, dst);
  }
  absl::StatusOr<std::vector<kernels::SampleResult>> DoSample(
      const Tensor& logits, absl::Span<const kernels::SampleRequest> requests) override {
    Record(kernels::Op::kSample, {&logits});
    return inner_->Sample(logits, requests);
  }

 private:
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
};

}  // namespace shift::testing
