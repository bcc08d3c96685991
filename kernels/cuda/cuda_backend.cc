#include "kernels/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/dtype.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.cuh"
#include "kernels/cuda/runtime.h"

namespace shift::kernels::cuda {
namespace {

absl::Status CheckBlas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLASLt status ", static_cast<int>(status)));
}

// The largest power of two (up to 256) dividing the address.
uint32_t Alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// cuBLASLt, loaded when the first CUDA backend is made rather than linked:
// the library is over 500 MB, and a process that links it cannot start
// prometheus-cpp's HTTP server (civetweb's mg_start fails), so CPU ranks and
// every other binary stay free of it.
struct LtApi {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtDestroy) Destroy;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&cublasLtMatmul) Matmul;
};

absl::StatusOr<const LtApi*> LoadLt() {
  static LtApi api;
  static absl::Status status = [] {
    RuntimeLibrary lib({"libcublasLt.so.13", "libcublasLt.so"});
    if (!lib.loaded()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot load cuBLASLt (libcublasLt.so.13): ", lib.why()));
    }
    lib.Get(&api.Create, "cublasLtCreate");
    lib.Get(&api.Destroy, "cublasLtDestroy");
    lib.Get(&api.MatmulDescCreate, "cublasLtMatmulDescCreate");
    lib.Get(&api.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
    lib.Get(&api.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
    lib.Get(&api.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
    lib.Get(&api.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
    lib.Get(&api.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
    lib.Get(&api.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
    lib.Get(&api.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
    lib.Get(&api.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
    lib.Get(&api.Matmul, "cublasLtMatmul");
    return lib.complete()
               ? absl::OkStatus()
               : absl::FailedPreconditionError("libcublasLt.so.13 lacks a function shift uses");
  }();
  if (!status.ok()) return status;
  return &api;
}

class CudaWeight final : public Weight {
 public:
  CudaWeight(const WeightPart& part, Buffer data)
      : Weight(part, DType::kBF16), data_(std::move(data)) {}
  // FP8 codes and one fp32 scale per row.
  CudaWeight(const WeightPart& part, Buffer codes, Buffer scales)
      : Weight(part, DType::kF8E4M3), data_(std::move(codes)), scales_(std::move(scales)) {}
  const Bf16* data() const { return data_.tensor().As<Bf16>(); }
  const uint8_t* codes() const { return static_cast<const uint8_t*>(data_.tensor().data); }
  const float* scales() const { return scales_.tensor().As<float>(); }

 private:
  Buffer data_;    // [n][k] bf16 (or FP8 codes), row-major as in the checkpoint (the part held)
  Buffer scales_;  // FP8: [n] fp32
};

class CudaRope final : public RopeTable {
 public:
  CudaRope(const RopeSpec& spec, Buffer inv_freq)
      : RopeTable(spec), inv_freq_(std::move(inv_freq)) {}
  const double* inv_freq() const { return static_cast<const double*>(inv_freq_.tensor().data); }

 private:
  Buffer inv_freq_;  // head_dim / 2 doubles, the CPU path's table
};

// Pinned host memory that stages uploads, reused: an event recorded after
// each copy from it is waited on before it is written again, so the host
// never waits for the device except when it would overwrite a copy still
// in flight.
class Staging {
 public:
  Staging() = default;
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() {
    if (event_ != nullptr) {
      cudaEventSynchronize(event_);
      cudaEventDestroy(event_);
    }
    if (data_ != nullptr) cudaFreeHost(data_);
  }

  // Room for `bytes`, once the last copy from it has finished.
  absl::StatusOr<char*> Get(size_t bytes) {
    if (event_ == nullptr) {
      SHIFT_RETURN_IF_ERROR(
          CudaStatus(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate"));
    }
    SHIFT_RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(event_), "staging event"));
    if (bytes > capacity_) {
      if (data_ != nullptr) cudaFreeHost(data_);
      data_ = nullptr;
      capacity_ = 0;
      SHIFT_RETURN_IF_ERROR(
          CudaStatus(cudaMallocHost(reinterpret_cast<void**>(&data_), bytes), "cudaMallocHost"));
      capacity_ = bytes;
    }
    return data_;
  }
  // Copies `bytes` staged by Get to `device`, asynchronously on `stream`.
  absl::Status Upload(void* device, size_t bytes, cudaStream_t stream) {
    SHIFT_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(device, data_, bytes, cudaMemcpyHostToDevice, stream), "upload step"));
    return CudaStatus(cudaEventRecord(event_, stream), "staging event");
  }

 private:
  char* data_ = nullptr;
  size_t capacity_ = 0;
  cudaEvent_t event_ = nullptr;
};

// A step's layout as the kernels read it: token ids, sequence of each
// token, table offsets, block tables, per-sequence first token, new tokens
// and positions after the step (int32), then positions (int64, 8-byte
// aligned), in one block of bytes.
struct PackedStep {
  std::vector<int32_t> ints;
  size_t offsets_at = 0, tables_at = 0, seq_at = 0;
  size_t int_bytes() const { return ints.size() * sizeof(int32_t); }
  size_t bytes(const StepLayout& layout) const {
    return int_bytes() + layout.positions.size() * sizeof(int64_t);
  }
};

PackedStep Pack(const StepLayout& layout) {
  PackedStep p;
  std::vector<int32_t>& ints = p.ints;
  ints = layout.token_ids;
  ints.insert(ints.end(), layout.sequence_of_token.begin(), layout.sequence_of_token.end());
  p.offsets_at = ints.size();
  int32_t offset = 0;
  for (const StepLayout::Sequence& s : layout.sequences) {
    ints.push_back(offset);
    offset += static_cast<int32_t>(s.block_table.size());
  }
  p.tables_at = ints.size();
  for (const StepLayout::Sequence& s : layout.sequences) {
    ints.insert(ints.end(), s.block_table.begin(), s.block_table.end());
  }
  p.seq_at = ints.size();
  for (const StepLayout::Sequence& s : layout.sequences) ints.push_back(s.first_token);
  for (const StepLayout::Sequence& s : layout.sequences) ints.push_back(s.num_tokens);
  for (const StepLayout::Sequence& s : layout.sequences) {
    ints.push_back(static_cast<int32_t>(s.start_position + s.num_tokens));
  }
  if (ints.size() % 2) ints.push_back(0);
  return p;
}

// Writes the packed step into `host` (bytes(layout) of them).
void WritePacked(const PackedStep& p, const StepLayout& layout, char* host) {
  std::memcpy(host, p.ints.data(), p.int_bytes());
  std::memcpy(host + p.int_bytes(), layout.positions.data(),
              layout.positions.size() * sizeof(int64_t));
}

DeviceStep ViewOf(const PackedStep& p, const StepLayout& layout, const void* data) {
  const auto* base = static_cast<const int32_t*>(data);
  const size_t n = layout.token_ids.size(), num_seqs = layout.sequences.size();
  return DeviceStep{
      base,
      reinterpret_cast<const int64_t*>(static_cast<const char*>(data) + p.int_bytes()),
      base + n,
      base + p.offsets_at,
      base + p.tables_at,
      static_cast<int64_t>(n),
      base + p.seq_at,
      base + p.seq_at + num_seqs,
      base + p.seq_at + 2 * num_seqs,
      static_cast<int64_t>(num_seqs)};
}

class CudaStepData final : public StepData {
 public:
  CudaStepData(StepLayout layout, Buffer memory, DeviceStep view, bool fixed)
      : StepData(std::move(layout)), memory_(std::move(memory)), view_(view), fixed_(fixed) {}
  const DeviceStep& view() const { return view_; }
  void* memory() const { return memory_.tensor().data; }
  size_t bytes() const { return static_cast<size_t>(memory_.tensor().size()) * sizeof(float); }
  // A fixed step (for a graph): its kernels' launch shapes may depend only
  // on its shape, never on its positions, which change between replays.
  bool fixed() const { return fixed_; }
  Staging& staging() { return staging_; }

 private:
  Buffer memory_;
  DeviceStep view_;
  bool fixed_;
  Staging staging_;  // a fixed step's own uploads
};

class CudaGraph final : public Graph {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  cudaGraphExec_t exec() const { return exec_; }

 private:
  cudaGraphExec_t exec_;
};

const DeviceStep& View(const StepData& step) {
  return static_cast<const CudaStepData&>(step).view();
}

absl::Status RequireBf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && (t->device != Device::kCuda || t->dtype != DType::kBF16)) {
      return absl::InvalidArgumentError(
          absl::StrCat("this CUDA operation takes bf16 device tensors, got ",
                       std::string(DTypeName(t->dtype)), " on ", DeviceName(t->device)));
    }
  }
  return absl::OkStatus();
}

Bf16* Bf(const Tensor& t) { return t.As<Bf16>(); }

}  // namespace

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool fp8_gemm) : device_(device), fp8_gemm_(fp8_gemm), host_(1) {}
  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    for (auto& [bytes, p] : free_) cudaFree(p);
    for (auto& [bytes, p] : graph_free_) cudaFree(p);
    for (cudaEvent_t event : events_) cudaEventDestroy(event);
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (lt_ != nullptr) lt_api_->Destroy(lt_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    SHIFT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    SHIFT_RETURN_IF_ERROR(
        CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    SHIFT_ASSIGN_OR_RETURN(lt_api_, LoadLt());
    SHIFT_RETURN_IF_ERROR(CheckBlas(lt_api_->Create(&lt_), "cublasLtCreate"));
    SHIFT_RETURN_IF_ERROR(CudaStatus(
        cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device_),
        "cudaDeviceGetAttribute"));
    SHIFT_RETURN_IF_ERROR(CudaStatus(
        cudaDeviceGetAttribute(&compute_major_, cudaDevAttrComputeCapabilityMajor, device_),
        "cudaDeviceGetAttribute"));
    SHIFT_RETURN_IF_ERROR(CudaStatus(
        cudaDeviceGetAttribute(&compute_minor_, cudaDevAttrComputeCapabilityMinor, device_),
        "cudaDeviceGetAttribute"));
    return CudaStatus(cudaMalloc(&workspace_, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace)");
  }

  Device device() const override { return Device::kCuda; }
  std::string description() const override {
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, device_) != cudaSuccess) {
      cudaGetLastError();
      return absl::StrCat("cuda:", device_);
    }
    return absl::StrCat("cuda:", device_, " ", props.name);
  }
  int device_index() const override { return device_; }
  std::string device_uuid() const override {
    cudaDeviceProp props{};
    if (cudaGetDeviceProperties(&props, device_) != cudaSuccess) {
      cudaGetLastError();
      return absl::StrCat("cuda:", device_);  // unique within the process at least
    }
    std::string uuid = "GPU-";
    for (int i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) uuid += '-';
      absl::StrAppendFormat(&uuid, "%02x", static_cast<unsigned char>(props.uuid.bytes[i]));
    }
    return uuid;
  }
  DType activation_dtype() const override { return DType::kBF16; }
  void* device_stream() const override { return stream_; }
  int64_t free_memory() const override {
    size_t free = 0, total = 0;
    if (cudaSetDevice(device_) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
      cudaGetLastError();
      return -1;
    }
    return static_cast<int64_t>(free);
  }

  absl::StatusOr<Buffer> Allocate(DType dtype, int64_t rows, int64_t cols, bool zero) override {
    SHIFT_RETURN_IF_ERROR(Use());
    if (rows < 0 || cols < 0) {
      return absl::InvalidArgumentError(absl::StrCat("a buffer of ", rows, " x ", cols));
    }
    SHIFT_ASSIGN_OR_RETURN(void* data, Raw(rows * cols * DTypeSize(dtype)));
    if (zero && data != nullptr) {
      SHIFT_RETURN_IF_ERROR(CudaStatus(
          cudaMemsetAsync(data, 0, rows * cols * DTypeSize(dtype), stream_), "cudaMemset"));
    }
    return Wrap(Tensor{data, dtype, Device::kCuda, rows, cols, cols});
  }

  absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeight(const float* w,
                                                         const WeightPart& part) override {
    SHIFT_ASSIGN_OR_RETURN(Buffer data, Allocate(DType::kBF16, part.rows(), part.cols(), false));
    SHIFT_RETURN_IF_ERROR(CopyFromHost(w, data));
    return std::unique_ptr<Weight>(std::make_unique<CudaWeight>(part, std::move(data)));
  }

  absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeightFp8(const uint8_t* codes,
                                                            const float* row_scales,
                                                            const WeightPart& part) override {
    if (!fp8_gemm_) return Backend::DoUploadWeightFp8(codes, row_scales, part);
    const int64_t n = part.rows(), k = part.cols();
    if (compute_major_ * 10 + compute_minor_ < 89) {
      return absl::FailedPreconditionError(absl::StrCat(
          "FP8 GEMMs need a GPU of compute capability 8.9 or later; CUDA device ", device_, " is ",
          compute_major_, ".", compute_minor_,
          " (--fp8_gemm=false runs FP8 checkpoints in bf16 on the dequantized weights)"));
    }
    SHIFT_RETURN_IF_ERROR(Use());
    SHIFT_ASSIGN_OR_RETURN(Buffer data, Allocate(DType::kF8E4M3, n, k, false));
    SHIFT_ASSIGN_OR_RETURN(Buffer scales, Allocate(DType::kF32, 1, n, false));
    SHIFT_RETURN_IF_ERROR(
        Sync(cudaMemcpyAsync(data.tensor().data, codes, static_cast<size_t>(n * k),
                             cudaMemcpyHostToDevice, stream_),
             "copy FP8 weight"));
    SHIFT_RETURN_IF_ERROR(Sync(
        cudaMemcpyAsync(scales.tensor().data, row_scales, static_cast<size_t>(n) * sizeof(float),
                        cudaMemcpyHostToDevice, stream_),
        "copy FP8 weight scales"));
    return std::unique_ptr<Weight>(
        std::make_unique<CudaWeight>(part, std::move(data), std::move(scales)));
  }

  // Block-scaled FP8 weights are dequantized to bf16 (the per-row path's
  // "multiply unscaled, then rescale" cannot apply block scales; cuBLASLt's
  // block-scaled FP8 matmul is not used yet), said once per process.
  absl::StatusOr<std::unique_ptr<Weight>> DoUploadWeightFp8Blocks(const uint8_t* codes,
                                                                  const float* block_scales,
                                                                  int64_t block,
                                                                  const WeightPart& part) override {
    static std::once_flag said;
    std::call_once(said, [&] {
      std::fprintf(stderr,
                   "shift: FP8 weights with %lldx%lld block scales are dequantized to bf16 on "
                   "CUDA device %d (no block-scaled FP8 GEMM yet)\n",
                   static_cast<long long>(block), static_cast<long long>(block), device_);
    });
    return Backend::DoUploadWeightFp8Blocks(codes, block_scales, block, part);
  }

  absl::StatusOr<std::unique_ptr<RopeTable>> UploadRope(const RopeSpec& spec) override {
    if (spec.head_dim <= 0 || spec.head_dim % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("RoPE needs an even head_dim, got ", spec.head_dim));
    }
    // The CPU path's frequency table, so both rotate by the same angles.
    const std::vector<double> inv_freq =
        cpu::Rope(spec.head_dim, spec.theta, spec.scaling).inv_freq();
    SHIFT_ASSIGN_OR_RETURN(void* data, Raw(inv_freq.size() * sizeof(double)));
    Buffer table = Wrap(
        Tensor{data, DType::kF32, Device::kCuda, 1, static_cast<int64_t>(inv_freq.size()) * 2, 0});
    SHIFT_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpy(data, inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice),
        "copy RoPE table"));
    return std::unique_ptr<RopeTable>(std::make_unique<CudaRope>(spec, std::move(table)));
  }

  absl::StatusOr<std::unique_ptr<StepData>> PrepareStep(StepLayout layout) override {
    return Prepare(std::move(layout), /*fixed=*/false);
  }
  absl::StatusOr<std::unique_ptr<StepData>> PrepareFixedStep(StepLayout layout) override {
    return Prepare(std::move(layout), /*fixed=*/true);
  }

  bool SupportsGraphs() const override { return true; }

 protected:
  absl::Status DoCopyFromHost(const float* host, const Tensor& dst) override {
    SHIFT_RETURN_IF_ERROR(Use());
    const size_t es = DTypeSize(dst.dtype), rows = dst.rows, cols = dst.cols;
    if (dst.dtype == DType::kF32) {
      return Sync(cudaMemcpy2DAsync(dst.data, dst.ld * es, host, cols * es, cols * es, rows,
                                    cudaMemcpyHostToDevice, stream_),
                  "copy to device");
    }
    if (dst.dtype != DType::kBF16) return absl::InvalidArgumentError("bf16 or fp32 only");
    std::vector<Bf16> converted(rows * cols);
    shift::ConvertToBf16(host, converted.size(), converted.data());
    return Sync(cudaMemcpy2DAsync(dst.data, dst.ld * es, converted.data(), cols * es, cols * es,
                                  rows, cudaMemcpyHostToDevice, stream_),
                "copy to device");
  }

  absl::Status DoCopyToHost(const Tensor& src, float* host) override {
    SHIFT_RETURN_IF_ERROR(Use());
    const size_t es = DTypeSize(src.dtype), rows = src.rows, cols = src.cols;
    if (src.dtype == DType::kF32) {
      return Sync(cudaMemcpy2DAsync(host, cols * es, src.data, src.ld * es, cols * es, rows,
                                    cudaMemcpyDeviceToHost, stream_),
                  "copy to host");
    }
    if (src.dtype != DType::kBF16) return absl::InvalidArgumentError("bf16 or fp32 only");
    std::vector<Bf16> raw(rows * cols);
    SHIFT_RETURN_IF_ERROR(Sync(cudaMemcpy2DAsync(raw.data(), cols * es, src.data, src.ld * es,
                                                 cols * es, rows, cudaMemcpyDeviceToHost, stream_),
                               "copy to host"));
    for (size_t i = 0; i < raw.size(); ++i) host[i] = shift::Bf16ToF32(raw[i]);
    return absl::OkStatus();
  }

  absl::Status DoEmbedding(const Tensor& table, const StepData& step, int64_t first,
                           const Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(Begin({&table, &out}));
    const std::vector<int32_t>& ids = step.layout().token_ids;
    for (int64_t t = first; t < first + out.rows; ++t) {
      if (ids[t] < 0 || ids[t] >= table.rows) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", ids[t], " is outside the embedding table of ", table.rows));
      }
    }
    return CudaStatus(LaunchEmbedding(Bf(table), table.ld, View(step), first, Bf(out), out.ld,
                                      out.rows, out.cols, stream_),
                      "embedding");
  }

  absl::Status DoRmsNorm(const Tensor& residual, const Tensor* add, const Tensor& weight, float eps,
                         const Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(Begin({&residual, add, &weight, &out}));
    return CudaStatus(
        LaunchRmsNorm(Bf(residual), residual.ld, add ? Bf(*add) : nullptr, add ? add->ld : 0,
                      Bf(weight), eps, Bf(out), out.ld, out.rows, out.cols, stream_),
        "rms_norm");
  }

  absl::Status DoGemm(const Tensor& x, const Weight& w_base, const GemmRange& whole_range,
                      const Tensor* bias, const Tensor& y) override {
    // The range within the part of the weight held.
    const GemmRange range = w_base.Local(whole_range);
    SHIFT_RETURN_IF_ERROR(RequireBf16({&x, bias}));
    if (y.device != Device::kCuda || (y.dtype != DType::kBF16 && y.dtype != DType::kF32)) {
      return absl::InvalidArgumentError("gemm: y must be bf16 or fp32 on the device");
    }
    const auto& w = static_cast<const CudaWeight&>(w_base);
    const int64_t n_end = range.n_end, cols = n_end - range.n_begin;
    const int64_t group = w.k() / w.groups(), kr = group * range.group_count;
    const int64_t m = x.rows;
    if (m == 0 || cols == 0) return absl::OkStatus();
    SHIFT_RETURN_IF_ERROR(Use());
    // cuBLASLt's kernels want 16-byte aligned rows: an input or output view
    // that has none (a column window at an odd offset, an odd width) goes
    // through a buffer whose rows are padded to 16 bytes.
    auto aligned = [](const Tensor& t) {
      return Alignment(t.data) >= 16 && (t.ld * static_cast<int64_t>(DTypeSize(t.dtype))) % 16 == 0;
    };
    auto padded = [&](const Tensor& t) -> absl::StatusOr<Buffer> {
      const int64_t per_16 = 16 / static_cast<int64_t>(DTypeSize(t.dtype));
      return Allocate(t.dtype, t.rows, (t.cols + per_16 - 1) / per_16 * per_16, false);
    };
    if (!aligned(x)) {
      SHIFT_ASSIGN_OR_RETURN(Buffer copy, padded(x));
      const Tensor view = copy.Cols(0, x.cols);
      SHIFT_RETURN_IF_ERROR(DoCopy(x, view));
      return DoGemm(view, w_base, whole_range, bias, y);
    }
    if (!aligned(y)) {
      SHIFT_ASSIGN_OR_RETURN(Buffer dense, padded(y));
      const Tensor view = dense.Cols(0, y.cols);
      SHIFT_RETURN_IF_ERROR(DoGemm(x, w_base, whole_range, bias, view));
      return DoCopy(view, y);
    }
    if (w.dtype() == DType::kF8E4M3) return Fp8Gemm(x, w, range, bias, y, cols, kr);
    // In cuBLAS's column-major terms Yᵀ (cols × m, ld y.ld) = op(A) · B:
    // A is W's rows [n_begin, n_end) restricted to the range's K columns,
    // which column-major is kr × cols with ld w.k(), used transposed; B is
    // Xᵀ, kr × m with ld x.ld.
    return RunMatmul(Bf16Matmul(w.data() + range.n_begin * w.k() + group * range.group_begin, w.k(),
                                x, bias, y, cols, kr));
  }

  // One cuBLASLt matmul, D (cols × m) = op(A)ᵀ-style as DoGemm describes,
  // with optional bias and per-row (A) / per-column (B) fp32 scales.
  struct Matmul {
    const void* a = nullptr;
    cudaDataType_t a_type = CUDA_R_16BF;
    int64_t lda = 0;
    const void* b = nullptr;
    cudaDataType_t b_type = CUDA_R_16BF;
    int64_t ldb = 0;
    void* d = nullptr;
    cudaDataType_t d_type = CUDA_R_16BF;
    int64_t ldd = 0;
    int64_t m = 0, cols = 0, kr = 0;
    const void* bias = nullptr;  // bf16, cols
    // Outer-vector scales (FP8): D[j][i] = a_scale[j] · b_scale[i] · dot.
    const float* a_scale = nullptr;  // cols
    const float* b_scale = nullptr;  // m
  };

  // y (+ bias) = x · Aᵀ for a bf16 weight slice `a` (cols rows of kr, ld
  // `lda`).
  static Matmul Bf16Matmul(const void* a, int64_t lda, const Tensor& x, const Tensor* bias,
                           const Tensor& y, int64_t cols, int64_t kr) {
    Matmul spec;
    spec.a = a;
    spec.lda = lda;
    spec.b = x.data;
    spec.ldb = x.ld;
    spec.d = y.data;
    spec.d_type = y.dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
    spec.ldd = y.ld;
    spec.m = x.rows;
    spec.cols = cols;
    spec.kr = kr;
    spec.bias = bias != nullptr ? bias->data : nullptr;
    return spec;
  }

  // UNIMPLEMENTED when cuBLASLt has no algorithm for the spec.
  absl::Status RunMatmul(const Matmul& s) {
    const bool scaled = s.a_scale != nullptr;
    const GemmKey key{s.m,
                      s.cols,
                      s.kr,
                      s.lda,
                      s.ldb,
                      s.ldd,
                      s.a_type,
                      s.d_type,
                      s.bias != nullptr,
                      scaled,
                      Alignment(s.a),
                      Alignment(s.b),
                      Alignment(s.d),
                      s.bias ? Alignment(s.bias) : 256u};
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ly = nullptr;
    auto cleanup = [&] {
      if (op) lt_api_->MatmulDescDestroy(op);
      if (la) lt_api_->MatrixLayoutDestroy(la);
      if (lb) lt_api_->MatrixLayoutDestroy(lb);
      if (ly) lt_api_->MatrixLayoutDestroy(ly);
    };
    auto set = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, size_t size,
                   const char* what) {
      return CheckBlas(lt_api_->MatmulDescSetAttribute(op, attribute, value, size), what);
    };
    absl::Status status = [&]() -> absl::Status {
      SHIFT_RETURN_IF_ERROR(CheckBlas(
          lt_api_->MatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor"));
      const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
      SHIFT_RETURN_IF_ERROR(
          set(CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose), "transa"));
      SHIFT_RETURN_IF_ERROR(set(CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none), "transb"));
      if (s.bias != nullptr) {
        const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = CUDA_R_16BF;
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue), "epilogue"));
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &s.bias, sizeof(s.bias), "bias pointer"));
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type), "bias type"));
      }
      if (scaled) {
        const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode), "A scale mode"));
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode), "B scale mode"));
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &s.a_scale, sizeof(s.a_scale), "A scales"));
        SHIFT_RETURN_IF_ERROR(
            set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &s.b_scale, sizeof(s.b_scale), "B scales"));
      }
      SHIFT_RETURN_IF_ERROR(
          CheckBlas(lt_api_->MatrixLayoutCreate(&la, s.a_type, s.kr, s.cols, s.lda), "layout A"));
      SHIFT_RETURN_IF_ERROR(
          CheckBlas(lt_api_->MatrixLayoutCreate(&lb, s.b_type, s.kr, s.m, s.ldb), "layout B"));
      SHIFT_RETURN_IF_ERROR(
          CheckBlas(lt_api_->MatrixLayoutCreate(&ly, s.d_type, s.cols, s.m, s.ldd), "layout Y"));
      cublasLtMatmulAlgo_t algo;
      if (auto cached = algos_.find(key); cached != algos_.end()) {
        algo = cached->second;
      } else {
        SHIFT_ASSIGN_OR_RETURN(algo, Heuristic(op, la, lb, ly, key));
        algos_.emplace(key, algo);
      }
      const float alpha = 1.0f, beta = 0.0f;
      return CheckBlas(lt_api_->Matmul(lt_, op, &alpha, s.a, la, s.b, lb, &beta, s.d, ly, s.d, ly,
                                       &algo, workspace_, kWorkspaceBytes, stream_),
                       "cublasLtMatmul");
    }();
    cleanup();
    return status;
  }

  // An FP8 weight: the activations quantized per token, then one FP8
  // matmul with per-channel × per-token scales (cuBLASLt's outer-vector
  // scaling) or, where cuBLASLt has no such algorithm, an unscaled FP8
  // matmul into fp32 rescaled by a kernel. Shapes the FP8 matmul does not
  // take (K or the weight slice off 16-byte boundaries) run in bf16 on the
  // dequantized slice.
  absl::Status Fp8Gemm(const Tensor& x, const CudaWeight& w, const GemmRange& range,
                       const Tensor* bias, const Tensor& y, int64_t cols, int64_t kr) {
    const int64_t m = x.rows, group = w.k() / w.groups();
    const uint8_t* a = w.codes() + range.n_begin * w.k() + group * range.group_begin;
    const float* a_scales = w.scales() + range.n_begin;
    const bool y_f32 = y.dtype == DType::kF32;
    const cudaDataType_t y_type = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    // bf16 on the dequantized slice: shapes the FP8 matmul does not take.
    auto dequantized = [&]() -> absl::Status {
      const int64_t ld = (kr + 7) / 8 * 8;
      SHIFT_ASSIGN_OR_RETURN(Buffer slice, Allocate(DType::kBF16, cols, ld, false));
      SHIFT_RETURN_IF_ERROR(
          CudaStatus(LaunchDequantizeE4M3(a, w.k(), cols, kr, a_scales, Bf(slice), ld, stream_),
                     "dequantize FP8"));
      return RunMatmul(Bf16Matmul(slice.tensor().data, ld, x, bias, y, cols, kr));
    };
    if (kr % 16 != 0 || w.k() % 16 != 0 || Alignment(a) < 16) return dequantized();
    const int64_t ldq = (kr + 15) / 16 * 16;
    SHIFT_ASSIGN_OR_RETURN(Buffer xq, Allocate(DType::kF8E4M3, m, ldq, false));
    SHIFT_ASSIGN_OR_RETURN(Buffer xs, Allocate(DType::kF32, 1, m, false));
    auto* codes = static_cast<uint8_t*>(xq.tensor().data);
    float* x_scales = xs.tensor().As<float>();
    SHIFT_RETURN_IF_ERROR(
        CudaStatus(LaunchQuantizeRowsE4M3(Bf(x), x.ld, m, kr, codes, ldq, x_scales, stream_),
                   "quantize activations"));
    Matmul spec;
    spec.a = a;
    spec.a_type = CUDA_R_8F_E4M3;
    spec.lda = w.k();
    spec.b = codes;
    spec.b_type = CUDA_R_8F_E4M3;
    spec.ldb = ldq;
    spec.m = m;
    spec.cols = cols;
    spec.kr = kr;
    if (Fp8OuterScales()) {
      Matmul scaled = spec;
      scaled.d = y.data;
      scaled.d_type = y_type;
      scaled.ldd = y.ld;
      scaled.bias = bias != nullptr ? bias->data : nullptr;
      scaled.a_scale = a_scales;
      scaled.b_scale = x_scales;
      const absl::Status status = RunMatmul(scaled);
      if (status.ok()) return status;
      // This cuBLASLt (or GPU) takes no such scales: rescale after the
      // product from now on.
      std::fprintf(stderr,
                   "shift: cuBLASLt refused per-token x per-channel FP8 scales (%s); FP8 products "
                   "are rescaled by a kernel instead\n",
                   std::string(status.message()).c_str());
      fp8_outer_ = false;
    }
    const int64_t ld_acc = (cols + 3) / 4 * 4;
    SHIFT_ASSIGN_OR_RETURN(Buffer acc, Allocate(DType::kF32, m, ld_acc, false));
    spec.d = acc.tensor().data;
    spec.d_type = CUDA_R_32F;
    spec.ldd = ld_acc;
    if (const absl::Status status = RunMatmul(spec); !status.ok()) {
      return absl::IsUnimplemented(status) ? dequantized() : status;
    }
    return CudaStatus(
        LaunchScaleRowsCols(acc.tensor().As<float>(), ld_acc, m, cols, x_scales, a_scales,
                            bias != nullptr ? Bf(*bias) : nullptr, y.data, y.ld, y_f32, stream_),
        "rescale FP8 product");
  }

  // Whether to ask cuBLASLt for outer-vector scales: until it turns out to
  // have no algorithm for them; SHIFT_FP8_SCALING=epilogue (or outer)
  // forces the choice, for comparisons.
  bool Fp8OuterScales() {
    static const char* env = std::getenv("SHIFT_FP8_SCALING");
    if (env != nullptr && std::string_view(env) == "epilogue") return false;
    if (env != nullptr && std::string_view(env) == "outer") return true;
    return fp8_outer_;
  }

  absl::Status DoRope(const Tensor& x, int64_t heads, const RopeTable& rope, const StepData& step,
                      int64_t first) override {
    SHIFT_RETURN_IF_ERROR(Begin({&x}));
    return CudaStatus(
        LaunchRope(Bf(x), x.ld, x.rows, heads, rope.spec().head_dim,
                   static_cast<const CudaRope&>(rope).inv_freq(), View(step), first, stream_),
        "rope");
  }

  absl::Status DoWriteKv(const PagedKv& cache, const Tensor& k, const Tensor& v,
                         const StepData& step) override {
    SHIFT_RETURN_IF_ERROR(Begin({&cache.k, &cache.v, &k, &v}));
    SHIFT_RETURN_IF_ERROR(CheckBlockTables(cache, step));
    return CudaStatus(
        LaunchWriteKv(Bf(k), k.ld, Bf(v), v.ld, Bf(cache.k), Bf(cache.v), cache.block_size,
                      cache.kv_heads * cache.head_dim, View(step), stream_),
        "write_kv");
  }

  absl::Status DoAttention(const Tensor& q, int64_t heads, const PagedKv& cache,
                           const StepData& step, float scale, const Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(Begin({&cache.k, &cache.v, &q, &out}));
    SHIFT_RETURN_IF_ERROR(CheckBlockTables(cache, step));
    if (cache.head_dim > 256) {
      return absl::UnimplementedError(
          absl::StrCat("CUDA attention handles head_dim up to 256, not ", cache.head_dim));
    }
    if (UseFlashAttention(q, cache, out)) return FlashAttention(q, heads, cache, step, scale, out);
    return CudaStatus(LaunchAttention(Bf(q), q.ld, Bf(cache.k), Bf(cache.v), cache.block_size,
                                      cache.kv_heads, cache.head_dim, heads, cache.window, scale,
                                      View(step), Bf(out), out.ld, stream_),
                      "attention");
  }

  absl::Status DoSiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(Begin({&gate, &up, &out}));
    return CudaStatus(LaunchSiluMul(Bf(gate), gate.ld, Bf(up), up.ld, Bf(out), out.ld, out.rows,
                                    out.cols, stream_),
                      "silu_mul");
  }

  absl::Status DoCopy(const Tensor& src, const Tensor& dst) override {
    SHIFT_RETURN_IF_ERROR(Use());
    if (src.empty()) return absl::OkStatus();
    const size_t es = DTypeSize(src.dtype);
    return CudaStatus(cudaMemcpy2DAsync(dst.data, dst.ld * es, src.data, src.ld * es, src.cols * es,
                                        src.rows, cudaMemcpyDeviceToDevice, stream_),
                      "copy");
  }

  absl::Status DoGatherRows(const Tensor& src, absl::Span<const int64_t> rows,
                            const Tensor& dst) override {
    SHIFT_RETURN_IF_ERROR(Use());
    const size_t bytes = src.cols * DTypeSize(src.dtype);
    for (size_t i = 0; i < rows.size(); ++i) {
      SHIFT_RETURN_IF_ERROR(
          CudaStatus(cudaMemcpyAsync(dst.Rows(i, i + 1).data, src.Rows(rows[i], rows[i] + 1).data,
                                     bytes, cudaMemcpyDeviceToDevice, stream_),
                     "gather_rows"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<SampleResult>> DoSample(
      const Tensor& logits, absl::Span<const SampleRequest> requests) override {
    // Greedy rows that want no alternatives and no logits (the usual
    // serving case) are sampled on the device: only ids and log-probabilities
    // come back, not rows of the vocabulary's size.
    const bool greedy = std::all_of(requests.begin(), requests.end(), [](const SampleRequest& r) {
      return r.params.temperature <= 0.0f && r.top_logprobs == 0 && !r.return_logits;
    });
    if (greedy && logits.dtype == DType::kF32) return GreedySample(logits, requests.size());
    std::vector<float> host(logits.size());
    SHIFT_RETURN_IF_ERROR(DoCopyToHost(logits, host.data()));
    Tensor view{host.data(), DType::kF32, Device::kCpu, logits.rows, logits.cols, logits.cols};
    return host_.Sample(view, requests);
  }

 private:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  static constexpr int64_t kMinSplitPositions = 256, kMaxSplits = 32;

  // m, cols, kr, lda, ldb, ldd, A/B type, D type, bias, scaled, and the
  // alignments of A, B, D and the bias.
  using GemmKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaDataType_t,
                             cudaDataType_t, bool, bool, uint32_t, uint32_t, uint32_t, uint32_t>;

  absl::StatusOr<cublasLtMatmulAlgo_t> Heuristic(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                                                 cublasLtMatrixLayout_t lb,
                                                 cublasLtMatrixLayout_t ly, const GemmKey& key) {
    cublasLtMatmulPreference_t pref = nullptr;
    SHIFT_RETURN_IF_ERROR(CheckBlas(lt_api_->MatmulPreferenceCreate(&pref), "preference"));
    const size_t workspace = kWorkspaceBytes;
    const uint32_t align_a = std::get<10>(key), align_b = std::get<11>(key),
                   align_y = std::get<12>(key);
    lt_api_->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                          &workspace, sizeof(workspace));
    lt_api_->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                          &align_a, sizeof(align_a));
    lt_api_->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                          &align_b, sizeof(align_b));
    lt_api_->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                          &align_y, sizeof(align_y));
    lt_api_->MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                          &align_y, sizeof(align_y));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status =
        lt_api_->MatmulAlgoGetHeuristic(lt_, op, la, lb, ly, ly, pref, 1, &result, &found);
    lt_api_->MatmulPreferenceDestroy(pref);
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
      SHIFT_RETURN_IF_ERROR(CheckBlas(status, "cublasLtMatmulAlgoGetHeuristic"));
    }
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || found == 0) {
      return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for a GEMM of ",
                                                   std::get<0>(key), " x ", std::get<1>(key), " x ",
                                                   std::get<2>(key)));
    }
    return result.algo;
  }

  // The tensor-core kernel takes sm_80 and later, the usual head sizes and
  // rows of Q and out that start on 4-byte boundaries;
  // SHIFT_CUDA_ATTENTION=simple keeps the one-block-per-head kernel (for
  // comparisons).
  bool UseFlashAttention(const Tensor& q, const PagedKv& cache, const Tensor& out) const {
    static const bool simple = [] {
      const char* env = std::getenv("SHIFT_CUDA_ATTENTION");
      return env != nullptr && std::string_view(env) == "simple";
    }();
    auto even = [](const Tensor& t) { return Alignment(t.data) >= 4 && t.ld % 2 == 0; };
    return !simple && compute_major_ >= 8 && FlashAttentionSupports(cache.head_dim) && even(q) &&
           even(out);
  }

  // Row tiles per sequence, and splits of the positions when the rows alone
  // would leave most multiprocessors idle (decodes over long contexts):
  // about two blocks per multiprocessor, each split at least 256 positions.
  absl::Status FlashAttention(const Tensor& q, int64_t heads, const PagedKv& cache,
                              const StepData& step, float scale, const Tensor& out) {
    const int64_t group = heads / cache.kv_heads;
    const bool fixed = static_cast<const CudaStepData&>(step).fixed();
    int64_t row_tiles = 0, work = 0, longest = 0;
    for (const StepLayout::Sequence& s : step.layout().sequences) {
      const int64_t tiles = (s.num_tokens * group + kFlashRows - 1) / kFlashRows;
      row_tiles = std::max(row_tiles, tiles);
      work += tiles * cache.kv_heads;
      // A fixed step's splits follow what its block tables can hold, not
      // today's positions: a replay keeps the recorded launch.
      longest =
          std::max(longest, fixed ? static_cast<int64_t>(s.block_table.size()) * cache.block_size
                                  : s.start_position + s.num_tokens);
    }
    int64_t splits = 1;
    const int64_t target = 2 * static_cast<int64_t>(multiprocessors_);
    if (work > 0 && work < target) {
      splits =
          std::clamp<int64_t>(std::min((target + work - 1) / work,
                                       (longest + kMinSplitPositions - 1) / kMinSplitPositions),
                              1, kMaxSplits);
    }
    Buffer partial;
    if (splits > 1) {
      SHIFT_ASSIGN_OR_RETURN(
          partial, Allocate(DType::kF32, splits * q.rows * heads, cache.head_dim + 2, false));
    }
    return CudaStatus(
        LaunchFlashAttention(Bf(q), q.ld, Bf(cache.k), Bf(cache.v), cache.block_size,
                             cache.kv_heads, cache.head_dim, heads, cache.window, scale, View(step),
                             row_tiles, splits, splits > 1 ? partial.tensor().As<float>() : nullptr,
                             Bf(out), out.ld, stream_),
        "attention");
  }

  absl::StatusOr<std::vector<SampleResult>> GreedySample(const Tensor& logits, size_t rows) {
    SHIFT_RETURN_IF_ERROR(Use());
    SHIFT_ASSIGN_OR_RETURN(Buffer picked,
                           Allocate(DType::kF32, 2, static_cast<int64_t>(rows), false));
    auto* ids = static_cast<int32_t*>(picked.tensor().data);
    float* logprobs = picked.tensor().As<float>() + rows;
    SHIFT_RETURN_IF_ERROR(CudaStatus(LaunchGreedySample(logits.As<float>(), logits.ld, logits.rows,
                                                        logits.cols, ids, logprobs, stream_),
                                     "sample"));
    std::vector<int32_t> host_ids(rows);
    std::vector<float> host_logprobs(rows);
    SHIFT_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host_ids.data(), ids, rows * sizeof(int32_t),
                                                     cudaMemcpyDeviceToHost, stream_),
                                     "copy sampled ids"));
    SHIFT_RETURN_IF_ERROR(Sync(cudaMemcpyAsync(host_logprobs.data(), logprobs, rows * sizeof(float),
                                               cudaMemcpyDeviceToHost, stream_),
                               "copy sampled log-probabilities"));
    std::vector<SampleResult> out(rows);
    for (size_t i = 0; i < rows; ++i) {
      out[i].token_id = host_ids[i];
      out[i].logprob = host_logprobs[i];
    }
    return out;
  }

  void WaitForDevice() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  }

  // Markers are CUDA events, reused.
  int64_t RecordMarker() override {
    if (!Use().ok()) return -1;
    int64_t index;
    if (!free_events_.empty()) {
      index = free_events_.back();
      free_events_.pop_back();
    } else {
      cudaEvent_t event = nullptr;
      if (cudaEventCreate(&event) != cudaSuccess) {
        cudaGetLastError();
        return -1;
      }
      index = static_cast<int64_t>(events_.size());
      events_.push_back(event);
    }
    if (cudaEventRecord(events_[index], stream_) != cudaSuccess) {
      cudaGetLastError();
      free_events_.push_back(index);
      return -1;
    }
    return index;
  }

  double MarkerSeconds(int64_t a, int64_t b) override {
    float ms = 0.0f;
    if (cudaEventSynchronize(events_[b]) != cudaSuccess ||
        cudaEventElapsedTime(&ms, events_[a], events_[b]) != cudaSuccess) {
      cudaGetLastError();
      ms = 0.0f;
    }
    free_events_.push_back(a);
    if (b != a) free_events_.push_back(b);
    return ms / 1e3;
  }

  // One upload of the packed layout, staged through pinned memory (the
  // step's own for a fixed step, else the backend's), without waiting.
  absl::StatusOr<std::unique_ptr<StepData>> Prepare(StepLayout layout, bool fixed) {
    SHIFT_RETURN_IF_ERROR(Use());
    const PackedStep packed = Pack(layout);
    const size_t bytes = packed.bytes(layout);
    SHIFT_ASSIGN_OR_RETURN(void* data, Raw(bytes));
    Buffer memory = Wrap(Tensor{data, DType::kF32, Device::kCuda, 1,
                                static_cast<int64_t>(bytes / sizeof(float)), 0});
    const DeviceStep view = ViewOf(packed, layout, data);
    auto step = std::make_unique<CudaStepData>(std::move(layout), std::move(memory), view, fixed);
    if (bytes > 0) {
      Staging& staging = fixed ? step->staging() : staging_;
      SHIFT_ASSIGN_OR_RETURN(char* host, staging.Get(bytes));
      WritePacked(packed, step->layout(), host);
      SHIFT_RETURN_IF_ERROR(staging.Upload(data, bytes, stream_));
    }
    return std::unique_ptr<StepData>(std::move(step));
  }

  absl::Status DoUpdateFixedStep(StepData& base) override {
    auto& step = static_cast<CudaStepData&>(base);
    if (!step.fixed()) return absl::InvalidArgumentError("not a fixed step");
    SHIFT_RETURN_IF_ERROR(Use());
    const PackedStep packed = Pack(step.layout());
    const size_t bytes = packed.bytes(step.layout());
    if (bytes != step.bytes()) {
      return absl::InternalError("a fixed step's packed size changed");
    }
    if (bytes == 0) return absl::OkStatus();
    SHIFT_ASSIGN_OR_RETURN(char* host, step.staging().Get(bytes));
    WritePacked(packed, step.layout(), host);
    return step.staging().Upload(step.memory(), bytes, stream_);
  }

  absl::Status DoBeginCapture() override {
    SHIFT_RETURN_IF_ERROR(Use());
    if (capturing_) return absl::FailedPreconditionError("a capture is already under way");
    // Relaxed: allocations (cudaMalloc) may happen while recording.
    SHIFT_RETURN_IF_ERROR(CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed),
                                     "cudaStreamBeginCapture"));
    capturing_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Graph>> DoEndCapture() override {
    SHIFT_RETURN_IF_ERROR(Use());
    if (!capturing_) return absl::FailedPreconditionError("no capture is under way");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    SHIFT_RETURN_IF_ERROR(
        CudaStatus(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture"));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    SHIFT_RETURN_IF_ERROR(CudaStatus(made, "cudaGraphInstantiate"));
    return std::unique_ptr<Graph>(std::make_unique<CudaGraph>(exec));
  }

  absl::Status DoReplay(const Graph& graph) override {
    SHIFT_RETURN_IF_ERROR(Use());
    return CudaStatus(cudaGraphLaunch(static_cast<const CudaGraph&>(graph).exec(), stream_),
                      "cudaGraphLaunch");
  }

  absl::Status Use() { return CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); }

  // Runs a cudaMemcpy*Async and waits for it (host memory is pageable and
  // may go away when the caller returns).
  absl::Status Sync(cudaError_t err, const char* what) {
    SHIFT_RETURN_IF_ERROR(CudaStatus(err, what));
    return CudaStatus(cudaStreamSynchronize(stream_), what);
  }

  // Checks an operation's tensors and makes this backend's device current.
  absl::Status Begin(std::initializer_list<const Tensor*> tensors) {
    SHIFT_RETURN_IF_ERROR(RequireBf16(tensors));
    return Use();
  }

  // Every block a step names must lie inside the cache.
  absl::Status CheckBlockTables(const PagedKv& cache, const StepData& step) {
    const int64_t blocks = cache.k.rows / cache.block_size;
    for (const StepLayout::Sequence& s : step.layout().sequences) {
      if (static_cast<int64_t>(s.block_table.size()) * cache.block_size <
          s.start_position + s.num_tokens) {
        return absl::InvalidArgumentError("a block table is shorter than its sequence");
      }
      for (int32_t b : s.block_table) {
        if (b < 0 || b >= blocks) {
          return absl::InvalidArgumentError(
              absl::StrCat("block ", b, " is outside the cache of ", blocks));
        }
      }
    }
    return absl::OkStatus();
  }

  // Device memory of `bytes`, from the free list when a freed block of the
  // same size is there (the stream orders its reuse after earlier work).
  absl::StatusOr<void*> Raw(size_t bytes) {
    if (bytes == 0) return nullptr;
    bytes = (bytes + 255) / 256 * 256;
    // While recording, memory comes from the graphs' own pool: a replay
    // writes it, so nothing outside a graph may ever hold it.
    std::multimap<size_t, void*>& pool = capturing_ ? graph_free_ : free_;
    if (auto it = pool.find(bytes); it != pool.end()) {
      void* p = it->second;
      pool.erase(it);
      sizes_[p] = {bytes, capturing_};
      return p;
    }
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", bytes, " bytes on CUDA device ", device_, " (", free,
                       " of ", total, " bytes free): ", cudaGetErrorString(err)));
    }
    sizes_[p] = {bytes, capturing_};
    return p;
  }

  Buffer Wrap(Tensor tensor) {
    return Buffer(tensor, [this](void* p) {
      auto it = sizes_.find(p);
      if (it == sizes_.end()) return;
      const auto [bytes, graph] = it->second;
      (graph ? graph_free_ : free_).emplace(bytes, p);
      sizes_.erase(it);
    });
  }

  int device_;
  int multiprocessors_ = 1, compute_major_ = 0, compute_minor_ = 0;
  bool fp8_gemm_;
  bool fp8_outer_ = true;  // cuBLASLt takes outer-vector FP8 scales (until shown otherwise)
  cpu::CpuBackend host_;   // samples the rows copied back (the CPU sampler)
  cudaStream_t stream_ = nullptr;
  const LtApi* lt_api_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::map<GemmKey, cublasLtMatmulAlgo_t> algos_;
  std::multimap<size_t, void*> free_, graph_free_;
  std::map<void*, std::pair<size_t, bool>> sizes_;  // bytes, and whether graphs own it
  bool capturing_ = false;
  Staging staging_;                  // uploads of steps that are not fixed
  std::vector<cudaEvent_t> events_;  // timing markers, by index
  std::vector<int64_t> free_events_;
};

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device, bool fp8_gemm) {
  std::string why;
  const int count = DeviceCount(&why);
  if (count == 0) return absl::FailedPreconditionError(absl::StrCat("no CUDA device: ", why));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist (this host has ", count, ")"));
  }
  auto backend = std::make_unique<CudaBackend>(device, fp8_gemm);
  SHIFT_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace shift::kernels::cuda
