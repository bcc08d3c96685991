#include "common/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace shift {
namespace {

TEST(DTypeTest, Bf16RoundTripIsExactForRepresentableValues) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    float f = Bf16ToF32(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToBf16(f), bits) << bits;
  }
}

TEST(DTypeTest, F32ToBf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0).
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), F32ToBf16(1.0f));
  // Slightly above halfway rounds up.
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20))),
            1.0f + std::ldexp(1.0f, -7));
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DTypeTest, F8E4M3CodesRoundTripAndMatchTheFormat) {
  // Every non-NaN code converts back to itself (two zeros included).
  for (int code = 0; code < 256; ++code) {
    const float f = F8E4M3ToF32(static_cast<uint8_t>(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(f)) << code;
      continue;
    }
    EXPECT_EQ(F32ToF8E4M3(f), code) << code << " = " << f;
  }
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);                  // exponent 7 is 2^0
  EXPECT_EQ(F8E4M3ToF32(0x7E), 448.0f);                // the largest finite
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));  // the smallest normal
  EXPECT_EQ(F8E4M3ToF32(0xB8), -1.0f);
}

TEST(DTypeTest, F32ToF8E4M3RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(F32ToF8E4M3(1.0625f), 0x38);  // halfway 1 .. 1.125: the even code
  EXPECT_EQ(F32ToF8E4M3(1.1875f), 0x3A);  // halfway 1.125 .. 1.25: the even code
  EXPECT_EQ(F32ToF8E4M3(1.07f), 0x39);
  EXPECT_EQ(F32ToF8E4M3(500.0f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(-1e30f), 0xFE);
  EXPECT_EQ(F32ToF8E4M3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(1.0f, -11)), 0x00);  // under half the smallest
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(3.0f, -10)), 0x02);  // 1.5 subnormal steps: even
  EXPECT_EQ(F32ToF8E4M3(std::ldexp(3.0f, -11)), 0x01);  // 0.75 steps: up
  const unsigned char codes[3] = {0x38, 0xC0, 0x7E};
  float out[3];
  ConvertToF32(DType::kF8E4M3, codes, 3, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 448.0f);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeFromName("F8_E4M3"), DType::kF8E4M3);
}

TEST(DTypeTest, F16ConversionMatchesKnownValues) {
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F16ToF32(0xC000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToF32(0x7C00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7E00)));
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
}

TEST(DTypeTest, ConvertToF32HandlesUnalignedInput) {
  unsigned char buf[1 + 3 * 2];
  uint16_t vals[3] = {0x3F80, 0x4000, 0xBF80};  // bf16 1, 2, -1
  std::memcpy(buf + 1, vals, sizeof(vals));
  float out[3];
  ConvertToF32(DType::kBF16, buf + 1, 3, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], -1.0f);
}

}  // namespace
}  // namespace shift
