// The CPU backend: today's deterministic fp32 kernels (gemm.h, ops.h) behind
// the backend interface, on host memory. The reference every other backend
// is checked against; its results do not depend on the thread count.
#pragma once

#include "kernels/backend.h"

namespace shift::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  // `threads` host threads for GEMMs and attention over long contexts.
  explicit CpuBackend(int threads) : threads_(threads < 1 ? 1 : threads) {}

  Device device() const override { return Device::kCpu; }
  DType activation_dtype() const override { return DType::kF32; }
  absl::StatusOr<Buffer> Allocate(DType dtype, int64_t rows, int64_t cols, bool zero) override;
  absl::StatusOr<std::unique_ptr<RopeTable>> UploadRope(const RopeSpec& spec) override;
  absl::StatusOr<std::unique_ptr<StepData>> PrepareStep(StepLayout layout) override;

 protected:
  absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeight(const float* w,
                                                         const WeightPart& part) override;
  absl::Status DoCopyFromHost(const float* host, const Tensor& dst) override;
  absl::Status DoCopyToHost(const Tensor& src, float* host) override;
  absl::Status DoEmbedding(const Tensor& table, const StepData& step, int64_t first,
                           const Tensor& out) override;
  absl::Status DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight, float eps,
                         const Tensor& out) override;
  absl::Status DoGemm(const Tensor& x, const Weight& w, const GemmRange& range, const Tensor* bias,
                      const Tensor& y) override;
  absl::Status DoRope(const Tensor& x, int64_t heads, const RopeTable& rope, const StepData& step,
                      int64_t first) override;
  absl::Status DoWriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                         const StepData& step) override;
  absl::Status DoAttention(const Tensor& q, int64_t heads, const PagedKv& cache,
                           const StepData& step, float scale, const Tensor& out) override;
  absl::Status DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  absl::Status DoCopy(const Tensor& src, const Tensor& dst) override;
  absl::Status DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                            const Tensor& dst) override;
  absl::StatusOr<std::vector<SampleResult>> DoSample(
      const Tensor& logits, absl::Span<const SampleRequest> requests) override;

 private:
  int threads_;
};

}  // namespace shift::kernels::cpu
