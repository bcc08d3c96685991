// The NCCL communicator at P = 1 on one GPU: every collective of the
// Communicator interface on device buffers enqueued on the CUDA backend's
// stream (fp32 and bf16), the barrier, refusal of host buffers, and a
// group that never forms ending in UNAVAILABLE instead of a hang. The
// library's loading is checked without a GPU too. Skips, saying why,
// without a CUDA build or a GPU.
#include "worker/nccl_communicator.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace shift {
namespace {

TEST(NcclLibraryTest, LoadsAndNamesItsVersion) {
  if (!kernels::BuiltWithCuda()) GTEST_SKIP() << "built without CUDA (no nvcc at build time)";
  absl::StatusOr<std::string> version = NcclVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->rfind("2.", 0), 0u) << *version;
}

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no GPU present: " << why;
    kernels::BackendOptions options;
    auto backend = kernels::CreateBackend(kernels::Device::kCuda, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    auto id = NewNcclUniqueId();
    ASSERT_TRUE(id.ok()) << id.status();
    NcclOptions o;
    o.unique_id = *id;
    o.stream = backend_->device_stream();
    o.timeout_s = 30;
    auto comm = CreateNcclCommunicator(o);
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = *std::move(comm);
  }

  kernels::Buffer Device(const std::vector<float>& values, DType dtype = DType::kF32) {
    auto b = backend_->Allocate(dtype, 1, static_cast<int64_t>(values.size()));
    EXPECT_TRUE(b.ok()) << b.status();
    if (!values.empty()) {
      EXPECT_TRUE(backend_->CopyFromHost(values.data(), *b).ok());
    }
    return *std::move(b);
  }
  std::vector<float> Host(const kernels::Tensor& t) {
    std::vector<float> out(static_cast<size_t>(t.size()));
    EXPECT_TRUE(backend_->CopyToHost(t, out.data()).ok());
    return out;
  }

  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclCommunicatorTest, OneRankRunsEveryCollective) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::vector<float> values = {1, 2, 3, 4, 5, 6};
    kernels::Buffer in = Device(values, dtype);
    kernels::Buffer out = Device(std::vector<float>(6, 0), dtype);
    ASSERT_TRUE(comm_->AllGather(in, out).ok());
    EXPECT_EQ(Host(out), values);
    kernels::Buffer out2 = Device(std::vector<float>(6, 0), dtype);
    const std::vector<int64_t> counts = {6};
    ASSERT_TRUE(comm_->AllGatherV(in, counts, out2).ok());
    EXPECT_EQ(Host(out2), values);
    kernels::Buffer out3 = Device(std::vector<float>(6, 0), dtype);
    ASSERT_TRUE(comm_->Gather(in, out3, 0).ok());
    EXPECT_EQ(Host(out3), values);
    kernels::Buffer out4 = Device(std::vector<float>(6, 0), dtype);
    ASSERT_TRUE(comm_->AllToAllV(in, counts, out4, counts).ok());
    EXPECT_EQ(Host(out4), values);
  }
  ASSERT_TRUE(comm_->Barrier().ok());
  EXPECT_GT(comm_->seconds(), 0);
  EXPECT_EQ(comm_->bytes_sent(), 0u);  // one rank sends nothing
}

TEST_F(NcclCommunicatorTest, RefusesHostBuffersAndBadCounts) {
  std::vector<float> host(4, 1);
  const absl::Status s =
      comm_->AllGather(kernels::HostTensor(host.data(), 4), kernels::HostTensor(host.data(), 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  kernels::Buffer in = Device({1, 2});
  kernels::Buffer out = Device({0, 0});
  const std::vector<int64_t> wrong = {5};
  EXPECT_EQ(comm_->AllToAllV(in, wrong, out, wrong).code(), absl::StatusCode::kInvalidArgument);
  // Still usable after a refused call.
  const std::vector<int64_t> right = {2};
  EXPECT_TRUE(comm_->AllToAllV(in, right, out, right).ok());
}

TEST_F(NcclCommunicatorTest, AGroupThatNeverFormsIsUnavailableNotAHang) {
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok());
  NcclOptions o;
  o.rank = 0;
  o.size = 2;  // rank 1 never comes
  o.unique_id = *id;
  o.stream = backend_->device_stream();
  o.timeout_s = 3;
  auto comm = CreateNcclCommunicator(o);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnavailable) << comm.status();
}

}  // namespace
}  // namespace shift
