// The worker hub's registration rules, driven by hand-made ranks over real
// gRPC on 127.0.0.1: a hub that knows what the router serves refuses unknown
// groups and other models without saying what the right model is, cannot be
// locked by a bogus first registration, and never lets a newcomer replace a
// rank that is connected and on time.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/internal_server.h"

namespace shift {
namespace {

namespace rpc = v1::internal;
using ::testing::HasSubstr;
using ::testing::Not;

// One hand-made rank: a control stream that registers and then reads.
class FakeRank {
 public:
  FakeRank(const std::shared_ptr<grpc::Channel>& channel, uint32_t group, uint32_t rank,
           const std::string& fingerprint, uint32_t sp_degree = 0, uint32_t kv_blocks = 64)
      : stub_(rpc::Worker::NewStub(channel)) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    stream_ = stub_->Connect(&ctx_);
    rpc::WorkerMessage hello;
    rpc::Register* reg = hello.mutable_register_();
    reg->set_group(group);
    reg->set_rank(rank);
    reg->set_world_size(1);
    reg->set_kv_blocks(kv_blocks);
    reg->set_block_size(16);
    reg->set_model_fingerprint(fingerprint);
    reg->set_sp_degree(sp_degree);
    stream_->Write(hello);
  }
  // The first message from the hub (a welcome), or the stream's end status.
  bool Welcomed() { return stream_->Read(&first_); }
  // Reads until a plan comes and answers it with one sampled token.
  bool AnswerPlan(int32_t token_id, float logprob) {
    rpc::RouterMessage message;
    while (stream_->Read(&message)) {
      if (!message.has_plan()) continue;
      rpc::WorkerMessage reply;
      rpc::StepResult* result = reply.mutable_result();
      result->set_step_id(message.plan().step_id());
      rpc::SampledToken* token = result->add_sampled();
      token->set_seq_id(1);
      token->set_token_id(token_id);
      token->set_logprob(logprob);
      return stream_->Write(reply);
    }
    return false;
  }
  grpc::Status Finish() {
    ctx_.TryCancel();
    return stream_->Finish();
  }
  grpc::Status Refusal() {
    rpc::RouterMessage message;
    while (stream_->Read(&message)) {
    }
    return stream_->Finish();
  }

 private:
  std::unique_ptr<rpc::Worker::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<rpc::WorkerMessage, rpc::RouterMessage>> stream_;
  rpc::RouterMessage first_;
};

class WorkerHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WorkerHubOptions options;
    options.num_groups = 1;
    options.world_size = 1;
    options.sp_degree = 1;
    options.block_size = 16;
    options.model_fingerprint = "the-real-model";
    options.vocab_size = 1000;
    hub_ = std::make_unique<WorkerHub>(nullptr, options);
    int port = 0;
    server_ = testing::ServeInternal(&store_, hub_.get(), &port);
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  RendezvousService store_;
  std::unique_ptr<WorkerHub> hub_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(WorkerHubTest, UnknownGroupsAndOtherModelsAreRefusedWithoutTheRightFingerprint) {
  FakeRank elsewhere(channel_, 7, 0, "the-real-model");
  const grpc::Status group = elsewhere.Refusal();
  EXPECT_EQ(group.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(group.error_message(), HasSubstr("group 7 does not exist"));

  // A bogus first registration is refused and does not lock the group.
  FakeRank bogus(channel_, 0, 0, "guess");
  const grpc::Status refused = bogus.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("fingerprint differs"));
  EXPECT_THAT(refused.error_message(), Not(HasSubstr("the-real-model")));
  FakeRank real(channel_, 0, 0, "the-real-model");
  EXPECT_TRUE(real.Welcomed());
  EXPECT_TRUE(hub_->Registration(0, 0).ok());
  real.Finish();
}

// A rank started with another --sp_degree holds another shard of the
// weights: refused, saying which value the group has; one that names none
// (an older rank) runs pure SP, which a group of one is.
TEST_F(WorkerHubTest, RanksOfAnotherLayoutAreRefused) {
  FakeRank other(channel_, 0, 0, "the-real-model", /*sp_degree=*/2);
  const grpc::Status refused = other.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("--sp_degree 2 differs from the group's 1"));
  FakeRank unnamed(channel_, 0, 0, "the-real-model");
  EXPECT_TRUE(unnamed.Welcomed());
  unnamed.Finish();
}

// 2^32 - 1 blocks made the router allocate until std::bad_alloc aborted it.
TEST_F(WorkerHubTest, AbsurdKvBlockCountsAreRefusedAtRegistration) {
  for (const uint32_t blocks : {0u, 4294967295u, (1u << 22) + 1}) {
    FakeRank absurd(channel_, 0, 0, "the-real-model", 0, blocks);
    const grpc::Status refused = absurd.Refusal();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << blocks;
    EXPECT_THAT(refused.error_message(), HasSubstr("kv_blocks")) << blocks;
  }
  FakeRank most(channel_, 0, 0, "the-real-model", 0, 1u << 22);
  EXPECT_TRUE(most.Welcomed());
  most.Finish();
}

TEST_F(WorkerHubTest, ALiveRankIsNeverReplacedButARestartedOneGetsIn) {
  auto first = std::make_unique<FakeRank>(channel_, 0, 0, "the-real-model");
  ASSERT_TRUE(first->Welcomed());
  // A newcomer for the same rank while the first is connected and on time.
  FakeRank hijacker(channel_, 0, 0, "the-real-model");
  const grpc::Status status = hijacker.Refusal();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("registered and alive"));
  EXPECT_EQ(hub_->ConnectedRanks(0), std::vector<uint32_t>{0});
  // Once the first one's connection closes, its successor registers.
  first->Finish();
  first.reset();
  bool welcomed = false;
  for (int attempt = 0; attempt < 50 && !welcomed; ++attempt) {
    FakeRank restarted(channel_, 0, 0, "the-real-model");
    welcomed = restarted.Welcomed();
    if (welcomed) {
      restarted.Finish();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  EXPECT_TRUE(welcomed);
}

// A leader's tokens are data from another process: one outside the
// vocabulary (or a log-probability that is not one) fails the step and
// re-forms the group, as a broken rank's error does, instead of reaching a
// client.
TEST_F(WorkerHubTest, ALeadersTokensOutsideTheVocabularyFailTheStep) {
  FakeRank leader(channel_, 0, 0, "the-real-model");
  ASSERT_TRUE(leader.Welcomed());
  ASSERT_TRUE(hub_->WaitForGroup(0, 1, absl::Seconds(10)).ok());
  const uint64_t generation = hub_->Generation(0);
  struct Case {
    int32_t token;
    float logprob;
    const char* says;
  };
  const Case cases[] = {{5, -0.5f, ""},
                        {1000, -0.5f, "token id 1000 outside the vocabulary of 1000"},
                        {-3, -0.5f, "token id -3"},
                        {5, std::nanf(""), "log-probability"},
                        {5, 2.0f, "log-probability 2"}};
  uint64_t step = 0;
  for (const Case& c : cases) {
    rpc::StepPlan plan;
    plan.set_step_id(++step);
    ASSERT_TRUE(hub_->StartStep(0, plan).ok());
    ASSERT_TRUE(leader.AnswerPlan(c.token, c.logprob));
    auto outcome = hub_->WaitStep(0, absl::Seconds(10));
    if (std::string(c.says).empty()) {
      EXPECT_TRUE(outcome.ok()) << outcome.status();
      continue;
    }
    EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInternal) << c.token;
    EXPECT_THAT(std::string(outcome.status().message()), HasSubstr(c.says));
  }
  EXPECT_EQ(hub_->Generation(0), generation + 4);  // re-formed after each bad step
  leader.Finish();
}

}  // namespace
}  // namespace shift
