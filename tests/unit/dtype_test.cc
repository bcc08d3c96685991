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
