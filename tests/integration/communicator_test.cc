// The Gloo communicator with P ranks as threads of one process talking TCP
// on 127.0.0.1: each collective moves the right data, the deterministic
// all-reduce equals the canonical tree bit for bit, and a rank that never
// shows up is a clear error, not a crash or a hang.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/step_mode.h"
#include "gloo/rendezvous/hash_store.h"
#include "gloo/transport/tcp/address.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemm.h"
#include "worker/gloo_communicator.h"

namespace shift {
namespace {

using std::chrono::milliseconds;

// Runs body(communicator) on `p` connected ranks, one thread each.
void RunGroup(int p, const std::function<void(Communicator&)>& body) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      auto comm =
          GlooCommunicator::Connect(store, "group0/gen1", r, p, "127.0.0.1", milliseconds(20000));
      ASSERT_TRUE(comm.ok()) << comm.status();
      body(**comm);
      // Nobody tears down while a peer may still be finishing its connections.
      EXPECT_TRUE((*comm)->Barrier().ok());
    });
  }
  for (auto& t : threads) t.join();
}

std::vector<float> Values(int rank, int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(rank * 1000 + i);
  return v;
}

// A host vector as the communicator's tensor.
kernels::Tensor Host(const std::vector<float>& v) {
  return kernels::HostTensor(v.data(), static_cast<int64_t>(v.size()));
}

class CommunicatorTest : public ::testing::TestWithParam<int> {};

TEST_P(CommunicatorTest, GathersAndExchanges) {
  const int p = GetParam();
  RunGroup(p, [p](Communicator& comm) {
    const int r = comm.rank();
    const int64_t n = 5;
    std::vector<float> all(n * p);
    ASSERT_TRUE(comm.AllGather(Host(Values(r, n)), Host(all)).ok());
    for (int s = 0; s < p; ++s) {
      EXPECT_EQ(std::vector<float>(all.begin() + s * n, all.begin() + (s + 1) * n), Values(s, n));
    }
    // Rank s contributes s + 1 values.
    std::vector<int64_t> counts(p);
    for (int s = 0; s < p; ++s) counts[s] = s + 1;
    std::vector<float> v(p * (p + 1) / 2);
    ASSERT_TRUE(comm.AllGatherV(Host(Values(r, r + 1)), counts, Host(v)).ok());
    for (int s = 0, at = 0; s < p; at += s + 1, ++s) {
      EXPECT_EQ(std::vector<float>(v.begin() + at, v.begin() + at + s + 1), Values(s, s + 1));
    }
    std::vector<float> gathered(n * p, -1.0f);
    ASSERT_TRUE(comm.Gather(Host(Values(r, n)), Host(gathered), 0).ok());
    if (r == 0) {
      EXPECT_EQ(gathered, all);
    }
    // Rank r sends (d + 1) values to rank d, each value 100·r + d.
    std::vector<int64_t> send(p), recv(p);
    std::vector<float> out_data;
    for (int d = 0; d < p; ++d) {
      send[d] = d + 1;
      recv[d] = r + 1;
      for (int i = 0; i <= d; ++i) out_data.push_back(static_cast<float>(100 * r + d));
    }
    std::vector<float> in_data((r + 1) * p);
    ASSERT_TRUE(comm.AllToAllV(Host(out_data), send, Host(in_data), recv).ok());
    for (int s = 0; s < p; ++s) {
      for (int i = 0; i <= r; ++i) EXPECT_EQ(in_data[s * (r + 1) + i], 100 * s + r);
    }
    EXPECT_TRUE(comm.Barrier().ok());
    EXPECT_GT(comm.bytes_sent(), 0u);
  });
}

// Token ids travel as their int32 bits in fp32 tensors: the broadcast must
// move bytes, never values (denormals and NaN patterns included).
std::vector<float> TokenBits(int rank) {
  const std::vector<int32_t> ids = {0, 1, 151643, 128009, 0x7fc00001, rank};
  std::vector<float> bits(ids.size());
  std::memcpy(bits.data(), ids.data(), ids.size() * sizeof(int32_t));
  return bits;
}

TEST_P(CommunicatorTest, BroadcastsTheRootsBytesInPlace) {
  const int p = GetParam();
  RunGroup(p, [p](Communicator& comm) {
    const int r = comm.rank();
    const int root = p - 1;
    std::vector<float> data = TokenBits(r);
    const uint64_t sent = comm.bytes_sent(), received = comm.bytes_received();
    ASSERT_TRUE(comm.Broadcast(Host(data), root).ok());
    const std::vector<float> want = TokenBits(root);
    EXPECT_EQ(std::memcmp(data.data(), want.data(), want.size() * sizeof(float)), 0) << r;
    const uint64_t bytes = want.size() * sizeof(float);
    EXPECT_EQ(comm.bytes_sent() - sent, r == root ? bytes * (p - 1) : 0);
    EXPECT_EQ(comm.bytes_received() - received, r == root ? 0 : bytes);
    EXPECT_EQ(comm.Broadcast(Host(data), p).code(), absl::StatusCode::kInvalidArgument);
    // The hybrid layout's views exchange only.
    const std::vector<int> members = {r};
    EXPECT_FALSE(comm.Subgroup(members)->Broadcast(Host(data), 0).ok());
  });
}

TEST_P(CommunicatorTest, DeterministicAllReduceEqualsTheTree) {
  const int p = GetParam();
  const int64_t n = 37;
  // Subtree values per rank: random magnitudes so that order would show.
  std::vector<std::vector<float>> inputs(p, std::vector<float>(n));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1e4f, 1e4f);
  for (auto& in : inputs) {
    for (float& f : in) f = dist(rng) * (rng() % 2 ? 1e-4f : 1.0f);
  }
  std::vector<float> expected(n);
  for (int64_t e = 0; e < n; ++e) {
    std::vector<float> values(p);
    for (int r = 0; r < p; ++r) values[r] = inputs[r][e];
    expected[e] = kernels::cpu::JoinSubtrees(values.data(), p);
  }
  RunGroup(p, [&](Communicator& comm) {
    std::vector<float> data = inputs[comm.rank()];
    ASSERT_TRUE(comm.DeterministicAllReduce(Host(data)).ok());
    EXPECT_EQ(std::memcmp(data.data(), expected.data(), n * sizeof(float)), 0);
    // The bytes of a ring all-reduce: about 2·(P−1)/P·n floats each way.
    const double ring = 2.0 * (p - 1) / p * n * sizeof(float);
    EXPECT_NEAR(static_cast<double>(comm.bytes_sent()), ring, 2 * p * sizeof(float));
  });
}

// The hybrid layout's subgroups (GroupLayout, common/step_mode.h) as views
// of the group's communicator: every TP subgroup (same Ulysses index) runs
// its all-reduce at once, member j holding subtree j, and gets the tree's
// join of its own members only, bit for bit; every Ulysses group (same TP
// index) exchanges within itself only; each view counts its own bytes.
TEST_P(CommunicatorTest, SubgroupsReduceAndExchangeAmongTheirMembersOnly) {
  const int p = GetParam();
  const int64_t n = 29;
  std::vector<std::vector<float>> inputs(p, std::vector<float>(n));
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1e4f, 1e4f);
  for (auto& in : inputs) {
    for (float& f : in) f = dist(rng) * (rng() % 2 ? 1e-4f : 1.0f);
  }
  for (int sp = p / 2; sp >= 1; sp /= 2) {
    const GroupLayout layout{p, sp};
    const int tp = layout.tp();
    RunGroup(p, [&](Communicator& comm) {
      const int r = comm.rank();
      std::unique_ptr<Communicator> reduce = comm.Subgroup(layout.TpGroupOf(r));
      std::unique_ptr<Communicator> exchange = comm.Subgroup(layout.UlyssesGroupOf(r));
      ASSERT_EQ(reduce->rank(), layout.tp_index(r));
      ASSERT_EQ(reduce->size(), tp);
      ASSERT_EQ(exchange->rank(), layout.ulysses_index(r));
      std::vector<float> data = inputs[r];
      ASSERT_TRUE(reduce->DeterministicAllReduce(Host(data)).ok());
      std::vector<float> expected(n), values(tp);
      const std::vector<int> members = layout.TpGroupOf(r);
      for (int64_t e = 0; e < n; ++e) {
        for (int j = 0; j < tp; ++j) values[j] = inputs[members[j]][e];
        expected[e] = kernels::cpu::JoinSubtrees(values.data(), tp);
      }
      EXPECT_EQ(std::memcmp(data.data(), expected.data(), n * sizeof(float)), 0) << "sp " << sp;
      if (tp > 1) {
        const double ring = 2.0 * (tp - 1) / tp * n * sizeof(float);
        EXPECT_NEAR(static_cast<double>(reduce->bytes_sent()), ring, 2 * tp * sizeof(float));
      }
      // All-to-all within the Ulysses group: one value from each member.
      std::vector<float> send(sp), got(sp, -1);
      for (int i = 0; i < sp; ++i) send[i] = static_cast<float>(r * 100 + i);
      ASSERT_TRUE(exchange
                      ->AllToAllV(Host(send), std::vector<int64_t>(sp, 1), Host(got),
                                  std::vector<int64_t>(sp, 1))
                      .ok());
      const std::vector<int> group = layout.UlyssesGroupOf(r);
      for (int i = 0; i < sp; ++i) {
        EXPECT_EQ(got[i], static_cast<float>(group[i] * 100 + layout.ulysses_index(r)));
      }
      EXPECT_EQ(exchange->bytes_sent(), (sp - 1) * sizeof(float));
      EXPECT_FALSE(exchange->AllGather(Host(send), Host(got)).ok());  // views exchange only
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommunicatorTest, ::testing::Values(2, 4, 8),
                         [](const auto& info) { return absl::StrCat("P", info.param); });

TEST(CommunicatorErrorsTest, MissingRankTimesOutWithAClearError) {
  gloo::rendezvous::HashStore store;
  auto comm = GlooCommunicator::Connect(store, "group0/gen1", 0, 2, "127.0.0.1", milliseconds(500));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(comm.status().message(), ::testing::HasSubstr("group0/gen1"));
}

TEST(CommunicatorErrorsTest, NonPowerOfTwoGroupsRefuseTheDeterministicAllReduce) {
  RunGroup(3, [](Communicator& comm) {
    std::vector<float> data(4, 1.0f);
    EXPECT_EQ(comm.DeterministicAllReduce(Host(data)).code(),
              absl::StatusCode::kFailedPrecondition);
  });
}

// A real Gloo address made from a sockaddr_storage full of junk past the
// IPv4 address, as getsockname leaves it: its published bytes are clean.
TEST(GlooAddressTest, PaddingPastTheAddressIsZeroed) {
  sockaddr_storage ss;
  std::memset(&ss, 0xAB, sizeof(ss));
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(1234);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::memcpy(&ss, &in, sizeof(in));
  std::vector<char> bytes = gloo::transport::tcp::Address(ss, 7).bytes();
  std::vector<char> twice = bytes;
  twice.insert(twice.end(), bytes.begin(), bytes.end());
  ZeroGlooAddressPadding(twice);
  for (size_t r = 0; r < 2; ++r) {
    const char* record = twice.data() + r * bytes.size();
    EXPECT_EQ(std::memcmp(record, &in, sizeof(in)), 0);
    for (size_t i = sizeof(in); i < sizeof(sockaddr_storage); ++i) {
      ASSERT_EQ(record[i], 0) << "byte " << i << " of record " << r;
    }
    // The sequence number is kept.
    EXPECT_EQ(
        std::memcmp(record + sizeof(sockaddr_storage), bytes.data() + sizeof(sockaddr_storage),
                    bytes.size() - sizeof(sockaddr_storage)),
        0);
  }
  // Anything else is left as it is.
  std::vector<char> other(10, 'x');
  ZeroGlooAddressPadding(other);
  EXPECT_EQ(other, std::vector<char>(10, 'x'));
}

// What ranks really publish while they connect: no record carries bytes
// past its address.
TEST(GlooAddressTest, RanksPublishNoUninitialisedBytes) {
  class Recording final : public gloo::rendezvous::HashStore {
   public:
    void set(const std::string& key, const std::vector<char>& data) override {
      {
        absl::MutexLock lock(&mu);
        values.push_back(data);
      }
      HashStore::set(key, data);
    }
    absl::Mutex mu;
    std::vector<std::vector<char>> values;
  } store;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&store, r] {
      auto comm = GlooCommunicator::Connect(store, "g", r, 2, "127.0.0.1", milliseconds(20000));
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_TRUE((*comm)->Barrier().ok());
    });
  }
  for (auto& t : threads) t.join();
  const size_t record = gloo::transport::tcp::Address(sockaddr_storage{}).bytes().size();
  absl::MutexLock lock(&store.mu);
  int records = 0;
  for (const std::vector<char>& value : store.values) {
    if (value.size() % record != 0) continue;
    for (size_t at = 0; at < value.size(); at += record, ++records) {
      for (size_t i = sizeof(sockaddr_in); i < sizeof(sockaddr_storage); ++i) {
        ASSERT_EQ(value[at + i], 0) << "byte " << i;
      }
    }
  }
  EXPECT_GE(records, 2);
}

}  // namespace
}  // namespace shift
