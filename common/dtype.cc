#include "common/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace shift {

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF8E4M3:
      return "F8_E4M3";
  }
  return "?";
}

std::optional<DType> DTypeFromName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  return std::nullopt;
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
  }
  return 0;
}

float F8E4M3ToF32(uint8_t bits) {
  const float sign = (bits & 0x80) ? -1.0f : 1.0f;
  const int exponent = (bits >> 3) & 0xF, mantissa = bits & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal
  return sign * std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
}

uint8_t F32ToF8E4M3(float value) {
  if (std::isnan(value)) return 0x7F;
  // The 127 non-negative finite codes' values, ascending with the code.
  static const std::vector<float> values = [] {
    std::vector<float> v(0x7F);
    for (int c = 0; c < 0x7F; ++c) v[c] = F8E4M3ToF32(static_cast<uint8_t>(c));
    return v;
  }();
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  const float a = std::min(std::fabs(value), 448.0f);
  // The largest code not above `a`, then the nearer of it and the next,
  // ties to the even code.
  int code =
      static_cast<int>(std::upper_bound(values.begin(), values.end(), a) - values.begin()) - 1;
  if (code < 0x7E) {
    const float below = values[code], above = values[code + 1];
    if (a - below > above - a || (a - below == above - a && (code & 1))) ++code;
  }
  return static_cast<uint8_t>(sign | code);
}

float Bf16ToF32(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

uint16_t F32ToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3FF) << 13);
    }
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

namespace {

// Runs fn(begin, end) over [0, n): large conversions (a weight of an 8B
// model is 100M elements) on every core, small ones inline. Each element's
// result is the same either way.
template <typename Fn>
void ForChunks(size_t n, Fn fn) {
  constexpr size_t kMinChunk = size_t{1} << 22;
  const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()),
                                          std::max<size_t>(1, n / kMinChunk));
  if (threads <= 1) return fn(size_t{0}, n);
  const size_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) {
    pool.emplace_back([&fn, t, chunk, n] { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
  }
  fn(size_t{0}, chunk);
  for (std::thread& t : pool) t.join();
}

}  // namespace

void ConvertToF32(DType dtype, const void* src, size_t n, float* dst) {
  const auto* bytes = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16:
      ForChunks(n, [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) {
          uint16_t v;
          std::memcpy(&v, bytes + 2 * i, 2);
          dst[i] = Bf16ToF32(v);
        }
      });
      return;
    case DType::kF16:
      ForChunks(n, [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) {
          uint16_t v;
          std::memcpy(&v, bytes + 2 * i, 2);
          dst[i] = F16ToF32(v);
        }
      });
      return;
    case DType::kF8E4M3: {
      // 256 codes: a table.
      float table[256];
      for (int c = 0; c < 256; ++c) table[c] = F8E4M3ToF32(static_cast<uint8_t>(c));
      ForChunks(n, [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) dst[i] = table[bytes[i]];
      });
      return;
    }
  }
}

void ConvertToBf16(const float* src, size_t n, uint16_t* dst) {
  ForChunks(n, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) dst[i] = F32ToBf16(src[i]);
  });
}

}  // namespace shift
