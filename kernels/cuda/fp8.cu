// FP8 (E4M3) GEMM support kernels: per-token quantization of activations,
// the per-token x per-channel rescale of an unscaled FP8 product, and the
// dequantization of FP8 weights for shapes the FP8 GEMM does not take.
#include <cuda_fp8.h>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/ops.cuh"

namespace shift::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kE4M3Max = 448.0f;

// OCP E4M3 ("fn") to fp32, as common/dtype.cc's F8E4M3ToF32.
__device__ __forceinline__ float E4M3ToF32(uint8_t bits) {
  const int sign = bits >> 7, exponent = (bits >> 3) & 0xF, mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = __int_as_float(0x7fc00000);  // NaN
  } else if (exponent == 0) {
    magnitude = ldexpf(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    magnitude = ldexpf(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
  }
  return sign ? -magnitude : magnitude;
}

__device__ float BlockMax(float value) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffff, value, offset));
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  float top = 0.0f;
  for (int w = 0; w < (blockDim.x + 31) / 32; ++w) top = fmaxf(top, partial[w]);
  __syncthreads();
  return top;
}

__global__ void QuantizeRowsKernel(const Bf16* x, int64_t ld_x, int64_t cols, uint8_t* q,
                                   int64_t ld_q, float* scales) {
  const int64_t r = blockIdx.x;
  const Bf16* row = x + r * ld_x;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    amax = fmaxf(amax, fabsf(LoadBf16(row + c)));
  amax = BlockMax(amax);
  const float scale = amax > 0.0f ? amax / kE4M3Max : 1.0f;
  const float inv = 1.0f / scale;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    q[r * ld_q + c] = __nv_cvt_float_to_fp8(LoadBf16(row + c) * inv, __NV_SATFINITE, __NV_E4M3);
  }
  if (threadIdx.x == 0) scales[r] = scale;
}

__global__ void ScaleRowsColsKernel(const float* acc, int64_t ld_acc, int64_t rows, int64_t cols,
                                    const float* row_scale, const float* col_scale,
                                    const Bf16* bias, void* y, int64_t ld_y, bool y_f32) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  float v = acc[r * ld_acc + c] * row_scale[r] * col_scale[c];
  if (bias != nullptr) v += LoadBf16(bias + c);
  if (y_f32) {
    static_cast<float*>(y)[r * ld_y + c] = v;
  } else {
    static_cast<Bf16*>(y)[r * ld_y + c] = ToBf16(v);
  }
}

__global__ void DequantizeKernel(const uint8_t* codes, int64_t ld, int64_t rows, int64_t cols,
                                 const float* row_scale, Bf16* out, int64_t ld_out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  out[r * ld_out + c] = ToBf16(E4M3ToF32(codes[r * ld + c]) * row_scale[r]);
}

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t LaunchQuantizeRowsE4M3(const Bf16* x, int64_t ld_x, int64_t rows, int64_t cols,
                                   uint8_t* q, int64_t ld_q, float* scales, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  QuantizeRowsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, ld_x, cols, q, ld_q,
                                                                           scales);
  return cudaGetLastError();
}

cudaError_t LaunchScaleRowsCols(const float* acc, int64_t ld_acc, int64_t rows, int64_t cols,
                                const float* row_scale, const float* col_scale, const Bf16* bias,
                                void* y, int64_t ld_y, bool y_f32, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  ScaleRowsColsKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(
      acc, ld_acc, rows, cols, row_scale, col_scale, bias, y, ld_y, y_f32);
  return cudaGetLastError();
}

cudaError_t LaunchDequantizeE4M3(const uint8_t* codes, int64_t ld, int64_t rows, int64_t cols,
                                 const float* row_scale, Bf16* out, int64_t ld_out,
                                 cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  DequantizeKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(codes, ld, rows, cols, row_scale,
                                                                 out, ld_out);
  return cudaGetLastError();
}

}  // namespace shift::kernels::cuda
