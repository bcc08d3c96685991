// Element types of checkpoint tensors and their conversion to fp32, the type
// every CPU kernel computes in. Conversions are exact (bf16/f16 -> f32 loses
// nothing), so a weight read from any dtype has one fp32 value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace shift {

// kF8E4M3 is OCP FP8 E4M3 ("fn": no infinities, one NaN code per sign, the
// largest finite value 448), the weight format of FP8 checkpoints.
enum class DType { kF32, kBF16, kF16, kF8E4M3 };

// The safetensors spelling ("F32", "BF16", "F16", "F8_E4M3").
std::string_view DTypeName(DType dtype);
std::optional<DType> DTypeFromName(std::string_view name);
size_t DTypeSize(DType dtype);

float Bf16ToF32(uint16_t bits);
// Round to nearest even; NaN stays NaN.
uint16_t F32ToBf16(float value);
float F16ToF32(uint16_t bits);
float F8E4M3ToF32(uint8_t bits);
// Round to nearest even; beyond ±448 saturates to ±448; NaN gives 0x7F.
uint8_t F32ToF8E4M3(float value);

// Converts `n` elements of `dtype` at `src` (possibly unaligned) to fp32.
// Large conversions run on every core.
void ConvertToF32(DType dtype, const void* src, size_t n, float* dst);
// Rounds `n` fp32 values to bf16 (as F32ToBf16), on every core when large.
void ConvertToBf16(const float* src, size_t n, uint16_t* dst);

}  // namespace shift
