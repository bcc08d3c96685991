// Launchers of the dtype conversion kernels, declared without absl so that
// nvcc never sees absl headers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace shift::kernels::cuda {

// dst[i] = fp32 value of bf16 bits src[i], for i < n; device pointers.
cudaError_t LaunchBf16ToF32(const uint16_t* src, float* dst, size_t n, cudaStream_t stream);

}  // namespace shift::kernels::cuda
