// How a group of CUDA ranks picks its collectives (worker/device_collectives.h):
// the choice from the ranks' devices, and the exchange through the
// rendezvous store with ranks as threads: ranks sharing a device get the
// host-staged communicator and it works; NCCL asked for on a shared device
// is refused on every rank; on a machine without a GPU, distinct devices
// choose NCCL and every rank fails promptly with the reason, none waits
// for a store key that never comes.
#include "worker/device_collectives.h"

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/backends.h"
#include "kernels/cpu/cpu_backend.h"
#include "worker/gloo_communicator.h"
#include "worker/staged_communicator.h"

namespace shift {
namespace {

using std::chrono::milliseconds;

TEST(DeviceCollectivesTest, ParsesAndNames) {
  for (auto c : {DeviceCollectives::kAuto, DeviceCollectives::kNccl, DeviceCollectives::kStaged}) {
    EXPECT_EQ(*ParseDeviceCollectives(DeviceCollectivesName(c)), c);
  }
  EXPECT_FALSE(ParseDeviceCollectives("mpi").ok());
}

TEST(DeviceCollectivesTest, NcclUnlessTwoRanksShareADevice) {
  const std::vector<std::string> own = {"GPU-a", "GPU-b", "GPU-c", "GPU-d"};
  const std::vector<std::string> shared = {"GPU-a", "GPU-b", "GPU-a", "GPU-d"};
  EXPECT_EQ(*ChooseDeviceCollectives(DeviceCollectives::kAuto, own), DeviceCollectives::kNccl);
  EXPECT_EQ(*ChooseDeviceCollectives(DeviceCollectives::kAuto, shared), DeviceCollectives::kStaged);
  EXPECT_EQ(*ChooseDeviceCollectives(DeviceCollectives::kStaged, own), DeviceCollectives::kStaged);
  EXPECT_EQ(*ChooseDeviceCollectives(DeviceCollectives::kNccl, own), DeviceCollectives::kNccl);
  auto refused = ChooseDeviceCollectives(DeviceCollectives::kNccl, shared);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status()));
  EXPECT_NE(refused.status().message().find("ranks 0 and 2 share device GPU-a"), std::string::npos)
      << refused.status();
  // One rank: nothing to share.
  EXPECT_EQ(*ChooseDeviceCollectives(DeviceCollectives::kNccl, {"GPU-a"}),
            DeviceCollectives::kNccl);
}

struct Formed {
  absl::StatusOr<std::unique_ptr<Communicator>> comm = absl::UnknownError("not run");
  DeviceCollectives chosen = DeviceCollectives::kAuto;
  double seconds = 0;
};

// Forms a group of `uuids.size()` ranks (threads) asking for `requested`;
// `body` runs on each formed communicator before the group tears down.
std::vector<Formed> FormGroup(const std::vector<std::string>& uuids, DeviceCollectives requested,
                              const std::function<void(Communicator&)>& body = nullptr) {
  const int p = static_cast<int>(uuids.size());
  gloo::rendezvous::HashStore store;
  std::vector<std::unique_ptr<kernels::cpu::CpuBackend>> backends;
  for (int r = 0; r < p; ++r) backends.push_back(std::make_unique<kernels::cpu::CpuBackend>(1));
  std::vector<Formed> formed(p);
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      const auto start = std::chrono::steady_clock::now();
      auto host = GlooCommunicator::Connect(store, "g0/1", r, p, "127.0.0.1", milliseconds(20000));
      ASSERT_TRUE(host.ok()) << host.status();
      DeviceGroupOptions options;
      options.rank = r;
      options.size = p;
      options.requested = requested;
      options.device_uuid = uuids[r];
      options.nccl_timeout_s = 10;
      formed[r].comm = FormDeviceCommunicator(store, options, *std::move(host), backends[r].get(),
                                              &formed[r].chosen);
      formed[r].seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (formed[r].comm.ok() && body) {
        body(**formed[r].comm);
        EXPECT_TRUE((**formed[r].comm).Barrier().ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  return formed;
}

TEST(DeviceCollectivesTest, RanksSharingADeviceGetTheStagedCommunicator) {
  auto formed = FormGroup({"GPU-x", "GPU-x"}, DeviceCollectives::kAuto, [](Communicator& comm) {
    std::vector<float> in = {static_cast<float>(comm.rank() + 1)}, out(2, 0);
    ASSERT_TRUE(
        comm.AllGather(kernels::HostTensor(in.data(), 1), kernels::HostTensor(out.data(), 2)).ok());
    EXPECT_EQ(out, (std::vector<float>{1, 2}));
    // Staged through the host and back, in place.
    std::vector<float> tokens = {static_cast<float>(10 * comm.rank() + 7), 3};
    ASSERT_TRUE(comm.Broadcast(kernels::HostTensor(tokens.data(), 2), 1).ok());
    EXPECT_EQ(tokens, (std::vector<float>{17, 3}));
  });
  for (const Formed& f : formed) {
    ASSERT_TRUE(f.comm.ok()) << f.comm.status();
    EXPECT_EQ(f.chosen, DeviceCollectives::kStaged);
    EXPECT_NE(dynamic_cast<StagedCommunicator*>(f.comm->get()), nullptr);
    EXPECT_TRUE((*f.comm)->takes_device_buffers());
  }
}

TEST(DeviceCollectivesTest, NcclOnASharedDeviceIsRefusedOnEveryRank) {
  for (const Formed& f : FormGroup({"GPU-x", "GPU-x"}, DeviceCollectives::kNccl)) {
    ASSERT_FALSE(f.comm.ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(f.comm.status())) << f.comm.status();
  }
}

TEST(DeviceCollectivesTest, WithoutAGpuNcclFailsPromptlyOnEveryRank) {
  if (kernels::CudaDeviceCount() > 0) {
    GTEST_SKIP() << "this machine has a GPU: gpu-check's nccl stage forms real NCCL groups";
  }
  for (const Formed& f : FormGroup({"GPU-a", "GPU-b"}, DeviceCollectives::kAuto)) {
    EXPECT_EQ(f.chosen, DeviceCollectives::kNccl);
    ASSERT_FALSE(f.comm.ok());
    EXPECT_TRUE(absl::IsUnavailable(f.comm.status())) << f.comm.status();
    // Well inside the 10 s NCCL set-up deadline: nobody waited for a peer.
    EXPECT_LT(f.seconds, 8.0) << f.comm.status();
  }
}

}  // namespace
}  // namespace shift
