// The router's rendezvous store over real gRPC on 127.0.0.1: set/get, waits
// that end when a key appears or with an error naming the missing keys,
// generations, counters, and Gloo ranks meeting through it.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/defaults.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemm.h"
#include "router/rendezvous_service.h"
#include "worker/gloo_communicator.h"
#include "worker/rendezvous_store.h"

namespace shift {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
namespace internal = v1::internal;

class RendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    stub_ = internal::Rendezvous::NewStub(channel_);
    service_.AdvanceGeneration(0, 1);  // as the router does when group 0 forms
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  static internal::StoreScope Scope(uint32_t group, uint64_t generation) {
    internal::StoreScope scope;
    scope.set_group(group);
    scope.set_generation(generation);
    return scope;
  }
  grpc::Status Set(uint64_t generation, const std::string& key, const std::string& value,
                   const std::string& ticket = "") {
    internal::SetRequest request;
    *request.mutable_scope() = Scope(0, generation);
    request.mutable_scope()->set_ticket(ticket);
    request.set_key(key);
    request.set_value(value);
    internal::SetResponse response;
    grpc::ClientContext ctx;
    return stub_->Set(&ctx, request, &response);
  }
  grpc::Status Get(uint64_t generation, std::vector<std::string> keys, uint32_t timeout_ms,
                   std::vector<std::string>* values, const std::string& ticket = "") {
    internal::GetRequest request;
    *request.mutable_scope() = Scope(0, generation);
    request.mutable_scope()->set_ticket(ticket);
    for (auto& k : keys) request.add_keys(k);
    request.set_timeout_ms(timeout_ms);
    internal::GetResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::Status status = stub_->Get(&ctx, request, &response);
    if (values) values->assign(response.values().begin(), response.values().end());
    return status;
  }

  RendezvousService service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<internal::Rendezvous::Stub> stub_;
};

TEST_F(RendezvousTest, SetThenGetAndWaitForLaterSet) {
  ASSERT_TRUE(Set(1, "a", "alpha").ok());
  std::vector<std::string> values;
  ASSERT_TRUE(Get(1, {"a"}, 0, &values).ok());
  EXPECT_EQ(values, std::vector<std::string>{"alpha"});
  EXPECT_EQ(Get(1, {"b"}, 0, nullptr).error_code(), grpc::StatusCode::NOT_FOUND);

  std::thread setter([this] {
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_TRUE(Set(1, "b", "beta").ok());
  });
  ASSERT_TRUE(Get(1, {"a", "b"}, 10000, &values).ok());
  setter.join();
  EXPECT_EQ(values, (std::vector<std::string>{"alpha", "beta"}));
}

// With tickets issued for a generation, the store answers only their
// holders, and a key one rank set no other rank may replace (its own
// writer may); the next generation's tickets retire these.
TEST_F(RendezvousTest, TicketsAdmitOnlyTheGenerationsRanksAndKeysKeepTheirWriter) {
  service_.AdvanceGeneration(0, 2, {{0, "ticket-of-rank-0"}, {1, "ticket-of-rank-1"}});
  for (const std::string& ticket : {std::string(), std::string("ticket-of-rank-9")}) {
    const grpc::Status set = Set(2, "comm/0", "x", ticket);
    EXPECT_EQ(set.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ticket;
    EXPECT_THAT(set.error_message(), HasSubstr("answers only its ranks"));
    EXPECT_EQ(Get(2, {"comm/0"}, 0, nullptr, ticket).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  ASSERT_TRUE(Set(2, "comm/0", "rank 0's address", "ticket-of-rank-0").ok());
  const grpc::Status taken = Set(2, "comm/0", "poison", "ticket-of-rank-1");
  EXPECT_EQ(taken.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(taken.error_message(), HasSubstr("was set by rank 0"));
  ASSERT_TRUE(Set(2, "comm/0", "rank 0's new address", "ticket-of-rank-0").ok());
  std::vector<std::string> values;
  ASSERT_TRUE(Get(2, {"comm/0"}, 0, &values, "ticket-of-rank-1").ok());
  EXPECT_EQ(values, std::vector<std::string>{"rank 0's new address"});
  service_.AdvanceGeneration(0, 3, {{0, "next-0"}, {1, "next-1"}});
  EXPECT_EQ(Set(3, "comm/0", "x", "ticket-of-rank-0").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Set(3, "comm/0", "x", "next-1").ok());
}

TEST_F(RendezvousTest, WaitTimesOutNamingTheMissingKeys) {
  ASSERT_TRUE(Set(1, "rank0", "x").ok());
  grpc::Status status = Get(1, {"rank0", "rank1"}, 200, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("rank1"));
  EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("rank0,")));
}

TEST_F(RendezvousTest, OlderGenerationsAreRefusedAndTheirWaitersFail) {
  ASSERT_TRUE(Set(1, "k", "old").ok());
  std::thread advance([this] {
    std::this_thread::sleep_for(milliseconds(100));
    service_.AdvanceGeneration(0, 2);
  });
  grpc::Status waiting = Get(1, {"never"}, 10000, nullptr);
  advance.join();
  EXPECT_EQ(waiting.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  grpc::Status stale = Set(1, "k", "again");
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stale.error_message(), HasSubstr("stale"));
  // The new generation starts empty.
  EXPECT_EQ(Get(2, {"k"}, 0, nullptr).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(RendezvousTest, ACallerCannotMoveAGenerationForward) {
  // A client's generation of 2^64 - 1 used to become the group's, making
  // every later generation stale and wedging the group.
  const grpc::Status status = Set(~uint64_t{0}, "k", "v");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("has not been issued"));
  EXPECT_TRUE(Set(1, "k", "still generation 1").ok());
  service_.AdvanceGeneration(0, 2);  // the router's rule still moves it
  EXPECT_TRUE(Set(2, "k", "v").ok());
  EXPECT_EQ(Set(1, "k", "v").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// 100 writes of 4 MB used to grow the router by 430 MB, kept forever; any
// group number made a scope of its own.
TEST_F(RendezvousTest, WhatACallerCanStoreIsBounded) {
  const grpc::Status big = Set(1, "k", std::string(defaults::kMaxRendezvousValueBytes + 1, 'x'));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Set(1, std::string(defaults::kMaxRendezvousKeyBytes + 1, 'k'), "v").error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (int64_t i = 0; i < defaults::kMaxRendezvousKeys; ++i) {
    ASSERT_TRUE(Set(1, absl::StrCat("key", i), "v").ok()) << i;
  }
  const grpc::Status full = Set(1, "one-more", "v");
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(full.error_message(), HasSubstr("keys"));
  EXPECT_TRUE(Set(1, "key0", "overwritten").ok());  // an existing key may change
  // A new generation starts empty.
  service_.AdvanceGeneration(0, 2);
  EXPECT_TRUE(Set(2, "one-more", "v").ok());
  // Only the router's groups exist.
  internal::SetRequest request;
  *request.mutable_scope() = Scope(7, 1);
  request.set_key("k");
  internal::SetResponse response;
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->Set(&ctx, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

// 300 waiting Gets of 256 keys of 16 KB took the router from 24 MB to
// 1.64 GB: a key no Set could store is refused at once, and waiting Gets
// are bounded in bytes.
TEST_F(RendezvousTest, WaitingGetsAreBoundedInBytes) {
  const grpc::Status long_key =
      Get(1, {std::string(defaults::kMaxRendezvousKeyBytes + 1, 'k')}, 10000, nullptr);
  EXPECT_EQ(long_key.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(long_key.error_message(), HasSubstr("keys hold at most"));
  // 256 keys of 256 bytes wait; the budget runs out after 64 such Gets.
  std::vector<std::string> keys;
  for (int i = 0; i < defaults::kMaxRendezvousKeys; ++i) {
    keys.push_back(absl::StrCat(i, std::string(defaults::kMaxRendezvousKeyBytes - 4, 'k')));
  }
  std::vector<std::thread> waiting;
  std::atomic<int> refused{0};
  for (int i = 0; i < 80; ++i) {
    waiting.emplace_back([&] {
      const grpc::Status status = Get(1, keys, 3000, nullptr);
      if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++refused;
      } else {
        // The wait ends naming some of its keys, not 64 KiB of them.
        EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
        EXPECT_THAT(status.error_message(), HasSubstr("and 248 more"));
      }
    });
  }
  for (std::thread& t : waiting) t.join();
  EXPECT_GE(refused.load(), 80 - 64);
  EXPECT_LT(refused.load(), 80);
}

TEST_F(RendezvousTest, CountersAddUp) {
  for (int i = 1; i <= 3; ++i) {
    internal::AddRequest request;
    *request.mutable_scope() = Scope(0, 1);
    request.set_key("joined");
    request.set_delta(1);
    internal::AddResponse response;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Add(&ctx, request, &response).ok());
    EXPECT_EQ(response.value(), i);
  }
}

TEST_F(RendezvousTest, ClientThatGivesUpLeavesNothingBehind) {
  internal::GetRequest request;
  *request.mutable_scope() = Scope(0, 1);
  request.add_keys("never");
  request.set_timeout_ms(60000);
  internal::GetResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(200));
  EXPECT_EQ(stub_->Get(&ctx, request, &response).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The store still serves.
  EXPECT_TRUE(Set(1, "after", "ok").ok());
}

TEST_F(RendezvousTest, GlooRanksMeetThroughTheStore) {
  const int p = 4;
  std::vector<std::thread> ranks;
  std::vector<std::vector<float>> results(p);
  for (int r = 0; r < p; ++r) {
    ranks.emplace_back([&, r] {
      GrpcRendezvousStore store(channel_, 0, 1, milliseconds(20000));
      auto comm = GlooCommunicator::Connect(store, "comm", r, p, "127.0.0.1", milliseconds(20000));
      ASSERT_TRUE(comm.ok()) << comm.status();
      std::vector<float> data = {static_cast<float>(r) * 0.1f, 1.0f + r};
      ASSERT_TRUE((*comm)->DeterministicAllReduce(kernels::HostTensor(data.data(), 2)).ok());
      results[r] = data;
      EXPECT_TRUE((*comm)->Barrier().ok());  // no teardown under a peer's feet
    });
  }
  for (auto& t : ranks) t.join();
  std::vector<float> first = {0.0f, 0.1f, 0.2f, 0.3f}, second = {1, 2, 3, 4};
  for (int r = 0; r < p; ++r) {
    ASSERT_EQ(results[r].size(), 2u);
    EXPECT_EQ(results[r][0], kernels::cpu::JoinSubtrees(first.data(), p));
    EXPECT_EQ(results[r][1], kernels::cpu::JoinSubtrees(second.data(), p));
  }
}

TEST_F(RendezvousTest, RankThatNeverShowsUpIsAClearError) {
  GrpcRendezvousStore store(channel_, 0, 1, milliseconds(300));
  auto comm = GlooCommunicator::Connect(store, "lonely", 0, 2, "127.0.0.1", milliseconds(300));
  ASSERT_FALSE(comm.ok());
  EXPECT_THAT(comm.status().message(), HasSubstr("did not show up"));
}

}  // namespace
}  // namespace shift
