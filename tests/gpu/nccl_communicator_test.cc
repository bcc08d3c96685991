// The NCCL communicator at P = 1 on one GPU: every collective of the
// Communicator interface on device buffers enqueued on the CUDA backend's
// stream (fp32 and bf16), the barrier, refusal of host buffers, a group
// formed through the rendezvous store as shift-worker forms it, a
// collective captured in a CUDA graph and replayed, and a group that never
// forms ending in UNAVAILABLE instead of a hang. The
// library's loading is checked without a GPU too. Skips, saying why,
// without a CUDA build or a GPU.
#include "worker/nccl_communicator.h"

#ifdef SHIFT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include <chrono>
#include <string>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "worker/device_collectives.h"
#include "worker/gloo_communicator.h"

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
    ASSERT_TRUE(comm_->Broadcast(in, 0).ok());  // in place
    EXPECT_EQ(Host(in), values);
    EXPECT_EQ(comm_->Broadcast(in, 1).code(), absl::StatusCode::kInvalidArgument);
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

TEST_F(NcclCommunicatorTest, TheAllReduceOfOneRankKeepsItsValues) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    kernels::Buffer data = Device({1.5f, -2.0f, 3.25f}, dtype);
    ASSERT_TRUE(comm_->DeterministicAllReduce(data).ok());
    EXPECT_EQ(Host(data), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  }
}

TEST_F(NcclCommunicatorTest, FormsThroughTheRendezvousStore) {
  gloo::rendezvous::HashStore store;
  auto host =
      GlooCommunicator::Connect(store, "g0/1", 0, 1, "127.0.0.1", std::chrono::milliseconds(10000));
  ASSERT_TRUE(host.ok()) << host.status();
  DeviceGroupOptions options;
  options.requested = DeviceCollectives::kNccl;
  options.device_uuid = backend_->device_uuid();
  EXPECT_EQ(options.device_uuid.rfind("GPU-", 0), 0u) << options.device_uuid;
  DeviceCollectives chosen = DeviceCollectives::kAuto;
  auto comm = FormDeviceCommunicator(store, options, *std::move(host), backend_.get(), &chosen);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ(chosen, DeviceCollectives::kNccl);
  kernels::Buffer in = Device({1, 2, 3}), out = Device(std::vector<float>(3, 0));
  ASSERT_TRUE((*comm)->AllGather(in, out).ok());
  EXPECT_EQ(Host(out), (std::vector<float>{1, 2, 3}));
}

#ifdef SHIFT_HAVE_CUDA
TEST_F(NcclCommunicatorTest, ACollectiveCapturedInAGraphRunsAtEachReplay) {
  kernels::Buffer in = Device({4, 5}), out = Device(std::vector<float>(2, 0));
  auto stream = static_cast<cudaStream_t>(backend_->device_stream());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  const absl::Status captured = comm_->AllGather(in, out);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(captured.ok()) << captured;
  EXPECT_EQ(Host(out), (std::vector<float>{0, 0})) << "capture must record, not run";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (float base : {10.0f, 20.0f}) {
    std::vector<float> values = {base, base + 1};
    ASSERT_TRUE(backend_->CopyFromHost(values.data(), in).ok());
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    EXPECT_EQ(Host(out), values);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}
#endif

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
