// Every CUDA kernel against its CPU counterpart, bit for bit where the
// operation is exact. Skips, saying why, without a CUDA build or a GPU.
#include <cstring>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#ifdef SHIFT_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace shift {
namespace {

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no GPU present: " << why;
  }
};

TEST_F(CudaKernelsTest, Bf16ToF32MatchesCpuForEveryBitPattern) {
#ifdef SHIFT_HAVE_CUDA
  std::vector<uint16_t> src(1 << 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i);
  std::vector<float> gpu(src.size()), cpu(src.size());
  ASSERT_TRUE(kernels::cuda::Bf16ToF32(src.data(), src.size(), gpu.data()).ok());
  ConvertToF32(DType::kBF16, src.data(), src.size(), cpu.data());
  EXPECT_EQ(std::memcmp(gpu.data(), cpu.data(), cpu.size() * sizeof(float)), 0);
#endif
}

TEST(BackendTest, CpuIsAlwaysAvailable) {
  auto backends = kernels::AvailableBackends();
  ASSERT_FALSE(backends.empty());
  EXPECT_EQ(backends[0], "cpu");
}

}  // namespace
}  // namespace shift
