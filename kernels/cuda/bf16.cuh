// bf16 loads and rounding shared by the CUDA kernels (device code only).
#pragma once

#include <cstdint>

namespace shift::kernels::cuda {

__device__ __forceinline__ float LoadBf16(const uint16_t* p) {
  return __uint_as_float(static_cast<uint32_t>(*p) << 16);
}

// Round to nearest even, NaN kept (as common/dtype.cc's F32ToBf16).
__device__ __forceinline__ uint16_t ToBf16(float value) {
  const uint32_t bits = __float_as_uint(value);
  if (value != value) return static_cast<uint16_t>((bits >> 16) | 0x40);
  return static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

// Two values rounded to bf16 in one 32-bit word, `lo` in the low half (the
// order of a tensor-core fragment's element pairs).
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  return static_cast<uint32_t>(ToBf16(lo)) | (static_cast<uint32_t>(ToBf16(hi)) << 16);
}

}  // namespace shift::kernels::cuda
