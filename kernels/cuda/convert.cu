#include "kernels/cuda/convert.cuh"

namespace shift::kernels::cuda {
namespace {

__global__ void Bf16ToF32Kernel(const uint16_t* src, float* dst, size_t n) {
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __uint_as_float(static_cast<uint32_t>(src[i]) << 16);
}

}  // namespace

cudaError_t LaunchBf16ToF32(const uint16_t* src, float* dst, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr unsigned kThreads = 256;
  unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  Bf16ToF32Kernel<<<blocks, kThreads, 0, stream>>>(src, dst, n);
  return cudaGetLastError();
}

}  // namespace shift::kernels::cuda
