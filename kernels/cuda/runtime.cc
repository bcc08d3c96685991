#include "kernels/cuda/runtime.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/convert.cuh"

namespace shift::kernels::cuda {

RuntimeLibrary::RuntimeLibrary(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if ((handle_ = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) return;
    const char* error = dlerror();
    why_ = error != nullptr ? error : name;
  }
}

void* RuntimeLibrary::Symbol(const char* name) const {
  return handle_ != nullptr ? dlsym(handle_, name) : nullptr;
}

absl::Status CudaStatus(int code, const char* what) {
  const auto err = static_cast<cudaError_t>(code);
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();  // a launch error is not sticky; clear it
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

namespace {

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

absl::Status Allocate(size_t bytes, DeviceBuffer* out) {
  void* p = nullptr;
  absl::Status status = CudaStatus(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  out->reset(p);
  return status;
}

}  // namespace

int DeviceCount(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why)
      *why = absl::StrCat("CUDA runtime reports ", cudaGetErrorName(err), ": ",
                          cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error for later calls
    return 0;
  }
  if (count == 0 && why) *why = "the CUDA runtime sees no device";
  return count;
}

absl::Status Bf16ToF32(const uint16_t* src, size_t n, float* dst) {
  DeviceBuffer d_src, d_dst;
  if (auto s = Allocate(n * sizeof(uint16_t), &d_src); !s.ok()) return s;
  if (auto s = Allocate(n * sizeof(float), &d_dst); !s.ok()) return s;
  if (auto s =
          CudaStatus(cudaMemcpy(d_src.get(), src, n * sizeof(uint16_t), cudaMemcpyHostToDevice),
                     "copy to device");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(LaunchBf16ToF32(static_cast<const uint16_t*>(d_src.get()),
                                          static_cast<float*>(d_dst.get()), n, nullptr),
                          "Bf16ToF32 launch");
      !s.ok()) {
    return s;
  }
  return CudaStatus(cudaMemcpy(dst, d_dst.get(), n * sizeof(float), cudaMemcpyDeviceToHost),
                    "copy to host");
}

}  // namespace shift::kernels::cuda
