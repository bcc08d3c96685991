#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace shift::kernels::cpu {
namespace {

class CpuWeight final : public Weight {
 public:
  CpuWeight(const WeightPart& part, PackedWeight packed)
      : Weight(part, DType::kF32), packed_(std::move(packed)) {}
  const PackedWeight& packed() const { return packed_; }

 private:
  PackedWeight packed_;
};

class CpuRope final : public RopeTable {
 public:
  explicit CpuRope(const RopeSpec& spec)
      : RopeTable(spec), rope_(spec.head_dim, spec.theta, spec.scaling) {}
  const cpu::Rope& rope() const { return rope_; }

 private:
  cpu::Rope rope_;
};

// Every tensor this backend reads or writes is fp32 host memory.
absl::Status RequireHostF32(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && (t->device != Device::kCpu || t->dtype != DType::kF32)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the CPU backend computes on fp32 host memory; got ",
                       std::string(DTypeName(t->dtype)), " on ", DeviceName(t->device)));
    }
  }
  return absl::OkStatus();
}

float* Row(const Tensor& t, int64_t r) { return t.As<float>() + r * t.ld; }

}  // namespace

absl::StatusOr<Buffer> CpuBackend::Allocate(DType dtype, int64_t rows, int64_t cols, bool zero) {
  if (dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CPU backend holds fp32 only, not ", std::string(DTypeName(dtype))));
  }
  if (rows < 0 || cols < 0) {
    return absl::InvalidArgumentError(absl::StrCat("a buffer of ", rows, " x ", cols));
  }
  const int64_t n = rows * cols;
  float* data = nullptr;
  if (n > 0) {
    data = zero ? new (std::nothrow) float[n]() : new (std::nothrow) float[n];
    if (data == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", n * sizeof(float), " bytes of host memory"));
    }
  }
  return Buffer(Tensor{data, DType::kF32, Device::kCpu, rows, cols, cols},
                [](void* p) { delete[] static_cast<float*>(p); });
}

absl::StatusOr<std::unique_ptr<Weight>> CpuBackend::DoUploadWeight(const float* w,
                                                                   const WeightPart& part) {
  return std::unique_ptr<Weight>(std::make_unique<CpuWeight>(
      part, PackedWeight::Pack(w, part.rows(), part.cols(), part.group_count)));
}

absl::StatusOr<std::unique_ptr<RopeTable>> CpuBackend::UploadRope(const RopeSpec& spec) {
  if (spec.head_dim <= 0 || spec.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RoPE needs an even head_dim, got ", spec.head_dim));
  }
  return std::unique_ptr<RopeTable>(std::make_unique<CpuRope>(spec));
}

absl::StatusOr<std::unique_ptr<StepData>> CpuBackend::PrepareStep(StepLayout layout) {
  return std::make_unique<StepData>(std::move(layout));
}

absl::Status CpuBackend::DoCopyFromHost(const float* host, const Tensor& dst) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&dst}));
  for (int64_t r = 0; r < dst.rows; ++r) {
    std::memcpy(Row(dst, r), host + r * dst.cols, dst.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoCopyToHost(const Tensor& src, float* host) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&src}));
  for (int64_t r = 0; r < src.rows; ++r) {
    std::memcpy(host + r * src.cols, Row(src, r), src.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoEmbedding(const Tensor& table, const StepData& step, int64_t first,
                                     const Tensor& out) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&table, &out}));
  const std::vector<int32_t>& ids = step.layout().token_ids;
  for (int64_t t = 0; t < out.rows; ++t) {
    const int32_t id = ids[first + t];
    if (id < 0 || id >= table.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the embedding table of ", table.rows));
    }
    std::memcpy(Row(out, t), Row(table, id), out.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight,
                                   float eps, const Tensor& out) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&residual, add, &weight, &out}));
  const int64_t d = out.cols;
  for (int64_t t = 0; t < out.rows; ++t) {
    float* h = Row(residual, t);
    if (add != nullptr) {
      const float* a = Row(*add, t);
      for (int64_t i = 0; i < d; ++i) h[i] = h[i] + a[i];
    }
    cpu::RmsNorm(h, 1, d, weight.As<float>(), eps, Row(out, t));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoGemm(const Tensor& x, const Weight& w, const GemmRange& range,
                                const Tensor* bias, const Tensor& y) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&x, bias, &y}));
  cpu::Gemm(x.As<float>(), x.rows, x.ld, static_cast<const CpuWeight&>(w).packed(), w.Local(range),
            y.As<float>(), y.ld, threads_);
  if (bias != nullptr) {
    for (int64_t t = 0; t < y.rows; ++t) cpu::AddBias(Row(y, t), 1, y.cols, bias->As<float>());
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoRope(const Tensor& x, int64_t heads, const RopeTable& rope,
                                const StepData& step, int64_t first) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&x}));
  const cpu::Rope& table = static_cast<const CpuRope&>(rope).rope();
  const std::vector<int64_t>& positions = step.layout().positions;
  for (int64_t t = 0; t < x.rows; ++t) table.Apply(Row(x, t), heads, positions[first + t]);
  return absl::OkStatus();
}

absl::Status CpuBackend::DoWriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                                   const StepData& step) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&cache.k, &cache.v, &k, &v}));
  if (!k.contiguous() || !v.contiguous()) {
    return absl::InvalidArgumentError("write_kv: K and V must be contiguous");
  }
  const KvView view{cache.k.As<float>(), cache.v.As<float>(), cache.block_size, cache.kv_heads,
                    cache.head_dim};
  for (const StepLayout::Sequence& s : step.layout().sequences) {
    cpu::WriteKv(view, s.block_table, s.start_position, s.num_tokens, Row(k, s.first_token),
                 Row(v, s.first_token));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoAttention(const Tensor& q, int64_t heads, const PagedKv& cache,
                                     const StepData& step, float scale, const Tensor& out) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&cache.k, &cache.v, &q, &out}));
  const StepLayout& layout = step.layout();
  const KvView view{cache.k.As<float>(), cache.v.As<float>(), cache.block_size,
                    cache.kv_heads,      cache.head_dim,      cache.window};
  int64_t max_pos = 0, work = 0;
  for (int64_t p : layout.positions) {
    max_pos = std::max(max_pos, p);
    work += (p + 1) * heads;
  }
  // Tokens are independent here; spread them over the threads when the step
  // attends to enough context to pay for them.
  ParallelFor(layout.num_tokens(), work > (1 << 16) ? threads_ : 1,
              [&](int64_t begin, int64_t end) {
                std::vector<float> scratch(max_pos + 1);
                for (int64_t t = begin; t < end; ++t) {
                  const StepLayout::Sequence& s = layout.sequences[layout.sequence_of_token[t]];
                  AttendOne(view, s.block_table, layout.positions[t], Row(q, t), heads, scale,
                            Row(out, t), scratch.data());
                }
              });
  return absl::OkStatus();
}

absl::Status CpuBackend::DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&gate, &up, &out}));
  if (gate.contiguous() && up.contiguous() && out.contiguous()) {
    cpu::SiluMul(gate.As<float>(), up.As<float>(), out.rows, out.cols, out.As<float>());
    return absl::OkStatus();
  }
  for (int64_t t = 0; t < out.rows; ++t) {
    cpu::SiluMul(Row(gate, t), Row(up, t), 1, out.cols, Row(out, t));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoCopy(const Tensor& src, const Tensor& dst) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&src, &dst}));
  for (int64_t r = 0; r < src.rows; ++r) {
    std::memcpy(Row(dst, r), Row(src, r), src.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                                      const Tensor& dst) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&src, &dst}));
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(Row(dst, static_cast<int64_t>(i)), Row(src, rows[i]), src.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SampleResult>> CpuBackend::DoSample(
    const Tensor& logits, absl::Span<const SampleRequest> requests) {
  SHIFT_RETURN_IF_ERROR(RequireHostF32({&logits}));
  const int64_t vocab = logits.cols;
  std::vector<SampleResult> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const SampleRequest& request = requests[i];
    const float* row = Row(logits, static_cast<int64_t>(i));
    SampleResult& result = out[i];
    result.token_id = cpu::Sample(row, vocab, request.params, request.position);
    result.logprob = LogProb(row, vocab, result.token_id);
    if (request.top_logprobs > 0) {
      // The most likely tokens, by logit then id, with their log-softmax.
      std::vector<int32_t> ids(vocab);
      std::iota(ids.begin(), ids.end(), 0);
      const int64_t k = std::min<int64_t>(request.top_logprobs, vocab);
      std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [row](int32_t a, int32_t b) {
        return row[a] != row[b] ? row[a] > row[b] : a < b;
      });
      for (int64_t j = 0; j < k; ++j) result.top.emplace_back(ids[j], LogProb(row, vocab, ids[j]));
    }
    if (request.return_logits) result.logits.assign(row, row + vocab);
  }
  return out;
}

}  // namespace shift::kernels::cpu
