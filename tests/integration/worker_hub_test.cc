// The worker hub's registration rules, driven by hand-made ranks over real
// gRPC on 127.0.0.1: a hub that knows what the router serves refuses unknown
// groups and other configs without saying what the right one is, cannot be
// locked by a bogus first registration, compares the ranks' weights reports
// (a differing piece named by tensor, a group that leaves a piece unread, a
// digest other than the pinned one), and never lets a newcomer replace a
// rank that is connected and on time.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fingerprint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/internal_server.h"

namespace shift {
namespace {

namespace rpc = v1::internal;
using ::testing::HasSubstr;
using ::testing::Not;

// The router's config.json digest in these tests.
constexpr uint64_t kConfig = 42;
constexpr uint64_t kPiece = kWeightsPieceBytes;

// A weights report of one tensor "w" of two pieces: `pieces` of them read,
// with these digests.
rpc::WeightsReport Report(std::map<uint32_t, uint64_t> pieces = {{0, 100}, {1, 101}},
                          uint64_t config = kConfig, uint64_t headers = 7) {
  rpc::WeightsReport report;
  report.set_config_digest(config);
  report.set_headers_digest(headers);
  report.set_piece_bytes(kPiece);
  rpc::TensorPieces* w = report.add_tensors();
  w->set_name("w");
  w->set_nbytes(2 * kPiece - 5);
  for (const auto& [index, digest] : pieces) {
    w->add_index(index);
    w->add_digest(digest);
  }
  return report;
}

WeightsReport Parsed(const rpc::WeightsReport& in) {
  WeightsReport out;
  out.config_digest = in.config_digest();
  out.headers_digest = in.headers_digest();
  out.piece_bytes = in.piece_bytes();
  for (const rpc::TensorPieces& t : in.tensors()) {
    out.tensors[t.name()].nbytes = t.nbytes();
    for (int i = 0; i < t.index_size(); ++i) out.tensors[t.name()].pieces[t.index(i)] = t.digest(i);
  }
  return out;
}

// One hand-made rank: a control stream that registers and then reads.
class FakeRank {
 public:
  FakeRank(const std::shared_ptr<grpc::Channel>& channel, uint32_t group, uint32_t rank,
           const rpc::WeightsReport& weights = Report(), uint32_t sp_degree = 0,
           uint32_t kv_blocks = 64, uint32_t world_size = 1)
      : stub_(rpc::Worker::NewStub(channel)) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    stream_ = stub_->Connect(&ctx_);
    rpc::WorkerMessage hello;
    rpc::Register* reg = hello.mutable_register_();
    reg->set_group(group);
    reg->set_rank(rank);
    reg->set_world_size(world_size);
    reg->set_kv_blocks(kv_blocks);
    reg->set_block_size(16);
    *reg->mutable_weights() = weights;
    reg->set_sp_degree(sp_degree);
    stream_->Write(hello);
  }
  // The first message from the hub (a welcome), or the stream's end status.
  bool Welcomed() { return stream_->Read(&first_); }
  // Reads up to the next Welcome.
  bool NextWelcome() {
    while (stream_->Read(&first_)) {
      if (first_.has_welcome()) return true;
    }
    return false;
  }
  // The generation and rendezvous ticket of the last Welcome read.
  uint64_t generation() const { return first_.welcome().generation(); }
  const std::string& ticket() const { return first_.welcome().rendezvous_ticket(); }
  // Reports the communicators of `generation` formed ("" error) or not.
  bool Formed(uint64_t generation, const std::string& error) {
    rpc::WorkerMessage report;
    report.mutable_formed()->set_generation(generation);
    report.mutable_formed()->set_error(error);
    return stream_->Write(report);
  }
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
    options.config_digest = kConfig;
    options.vocab_size = 1000;
    Start(options);
  }
  void Start(const WorkerHubOptions& options) {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    hub_ = std::make_unique<WorkerHub>(nullptr, options);
    int port = 0;
    server_ = testing::ServeInternal(&store_, hub_.get(), &port);
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
  }
  // A hub for groups of two ranks (pure SP, so either may read any piece).
  void StartPairs(std::optional<uint64_t> expected_digest = std::nullopt) {
    WorkerHubOptions options;
    options.num_groups = 2;
    options.world_size = 2;
    options.sp_degree = 2;
    options.block_size = 16;
    options.config_digest = kConfig;
    options.expected_weights_digest = expected_digest;
    Start(options);
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  RendezvousService store_;
  std::unique_ptr<WorkerHub> hub_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(WorkerHubTest, UnknownGroupsAndOtherConfigsAreRefusedWithoutTheRouterSayingItsOwn) {
  FakeRank elsewhere(channel_, 7, 0);
  const grpc::Status group = elsewhere.Refusal();
  EXPECT_EQ(group.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(group.error_message(), HasSubstr("group 7 does not exist"));

  // A bogus first registration is refused and does not lock the group.
  FakeRank bogus(channel_, 0, 0, Report({{0, 1}, {1, 2}}, /*config=*/43));
  const grpc::Status refused = bogus.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("its config.json differs from the router's"));
  EXPECT_THAT(refused.error_message(), Not(HasSubstr("2a")));  // kConfig in hex
  EXPECT_THAT(refused.error_message(), Not(HasSubstr("42")));
  // A rank of an older shift sends no report at all.
  FakeRank old(channel_, 0, 0, rpc::WeightsReport());
  EXPECT_THAT(old.Refusal().error_message(), HasSubstr("sent no weights report"));
  FakeRank real(channel_, 0, 0);
  EXPECT_TRUE(real.Welcomed());
  EXPECT_TRUE(hub_->Registration(0, 0).ok());
  EXPECT_FALSE(hub_->Registration(0, 0)->has_weights());  // kept apart, parsed
  real.Finish();
}

// A forged report costs the router no more than its size: each malformed
// one is refused, saying what is wrong.
TEST_F(WorkerHubTest, MalformedWeightsReportsAreRefused) {
  rpc::WeightsReport beyond = Report({{0, 1}, {2, 2}});
  rpc::WeightsReport unpaired = Report();
  unpaired.mutable_tensors(0)->add_index(1);
  rpc::WeightsReport twice = Report();
  *twice.add_tensors() = twice.tensors(0);
  rpc::WeightsReport huge = Report();
  huge.mutable_tensors(0)->set_nbytes(uint64_t{1} << 60);
  rpc::WeightsReport pieces = Report();
  pieces.set_piece_bytes(4096);
  rpc::WeightsReport nameless = Report();
  nameless.mutable_tensors(0)->set_name("");
  struct Case {
    const rpc::WeightsReport* report;
    const char* says;
  } cases[] = {{&beyond, "names piece 2 out of order or of 2"},
               {&unpaired, "not one digest per piece"},
               {&twice, "is reported twice"},
               {&huge, "claims"},
               {&pieces, "4096-byte pieces"},
               {&nameless, "has a name of 0 bytes"}};
  for (const Case& c : cases) {
    FakeRank forged(channel_, 0, 0, *c.report);
    const grpc::Status refused = forged.Refusal();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << c.says;
    EXPECT_THAT(refused.error_message(), HasSubstr(c.says));
  }
}

// Two ranks that each read one piece of "w" make a group whose digest is
// the model's; a rank whose piece differs from a registered rank's is
// refused naming the tensor, in its own group or another.
TEST_F(WorkerHubTest, RanksThatAgreeAndCoverTheModelFormAndADifferingPieceIsNamed) {
  StartPairs();
  FakeRank first(channel_, 0, 0, Report({{0, 100}}), 2, 64, 2);
  ASSERT_TRUE(first.Welcomed());
  FakeRank other(channel_, 0, 1, Report({{0, 999}, {1, 101}}), 2, 64, 2);
  const grpc::Status refused = other.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("tensor w differs from group 0 rank 0's (bytes 0..8388608)"));
  FakeRank headers(channel_, 0, 1, Report({{1, 101}}, kConfig, /*headers=*/8), 2, 64, 2);
  EXPECT_THAT(headers.Refusal().error_message(),
              HasSubstr("tensors (names, dtypes or shapes) differ from group 0 rank 0's"));
  EXPECT_EQ(hub_->WeightsDigest(0), "");
  FakeRank second(channel_, 0, 1, Report({{1, 101}}), 2, 64, 2);
  ASSERT_TRUE(second.Welcomed());
  ASSERT_TRUE(hub_->WaitForGroup(0, 2, absl::Seconds(10)).ok());
  const WeightsReport a = Parsed(Report({{0, 100}})), b = Parsed(Report({{1, 101}}));
  auto expected = CombinedWeightsDigest({&a, &b});
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(hub_->WeightsDigest(0), DigestHex(*expected));
  // Group 1 serves the same model: its rank is compared with group 0's.
  FakeRank elsewhere(channel_, 1, 0, Report({{1, 555}}), 2, 64, 2);
  EXPECT_THAT(elsewhere.Refusal().error_message(),
              HasSubstr("tensor w differs from group 0 rank 1's"));
  first.Finish();
  second.Finish();
}

// Ranks that agree piece by piece but together leave one unread are all
// refused; so is a group whose digest is not the pinned one, without the
// pinned value in the message.
TEST_F(WorkerHubTest, AGroupThatLeavesAPieceUnreadOrMakesAnotherDigestIsRefused) {
  StartPairs();
  {
    FakeRank first(channel_, 0, 0, Report({{0, 100}}), 2, 64, 2);
    ASSERT_TRUE(first.Welcomed());
    FakeRank second(channel_, 0, 1, Report({{0, 100}}), 2, 64, 2);
    for (FakeRank* rank : {&first, &second}) {
      const grpc::Status refused = rank->Refusal();
      EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(refused.error_message(),
                  HasSubstr("no rank read bytes 8388608..16777211 of tensor w"));
    }
    EXPECT_EQ(hub_->Generation(0), 0u);
  }
  const WeightsReport whole = Parsed(Report());
  auto digest = CombinedWeightsDigest({&whole});
  ASSERT_TRUE(digest.ok());
  StartPairs(*digest + 1);
  FakeRank first(channel_, 0, 0, Report(), 2, 64, 2);
  ASSERT_TRUE(first.Welcomed());
  FakeRank second(channel_, 0, 1, Report(), 2, 64, 2);
  const grpc::Status refused = second.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("weights digest is " + DigestHex(*digest) +
                        ", not the one the router's --expected_weights_digest pins"));
  EXPECT_THAT(refused.error_message(), Not(HasSubstr(DigestHex(*digest + 1))));
  EXPECT_EQ(first.Refusal().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  StartPairs(*digest);
  FakeRank pinned0(channel_, 0, 0, Report(), 2, 64, 2);
  FakeRank pinned1(channel_, 0, 1, Report(), 2, 64, 2);
  ASSERT_TRUE(pinned0.Welcomed());
  ASSERT_TRUE(hub_->WaitForGroup(0, 2, absl::Seconds(10)).ok());
  EXPECT_EQ(hub_->WeightsDigest(0), DigestHex(*digest));
  pinned0.Finish();
  pinned1.Finish();
}

// A rank started with another --sp_degree holds another shard of the
// weights: refused, saying which value the group has; one that names none
// (an older rank) runs pure SP, which a group of one is.
TEST_F(WorkerHubTest, RanksOfAnotherLayoutAreRefused) {
  FakeRank other(channel_, 0, 0, Report(), /*sp_degree=*/2);
  const grpc::Status refused = other.Refusal();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("--sp_degree 2 differs from the group's 1"));
  FakeRank unnamed(channel_, 0, 0);
  EXPECT_TRUE(unnamed.Welcomed());
  unnamed.Finish();
}

// 2^32 - 1 blocks made the router allocate until std::bad_alloc aborted it.
TEST_F(WorkerHubTest, AbsurdKvBlockCountsAreRefusedAtRegistration) {
  for (const uint32_t blocks : {0u, 4294967295u, (1u << 22) + 1}) {
    FakeRank absurd(channel_, 0, 0, Report(), 0, blocks);
    const grpc::Status refused = absurd.Refusal();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << blocks;
    EXPECT_THAT(refused.error_message(), HasSubstr("kv_blocks")) << blocks;
  }
  FakeRank most(channel_, 0, 0, Report(), 0, 1u << 22);
  EXPECT_TRUE(most.Welcomed());
  most.Finish();
}

TEST_F(WorkerHubTest, ALiveRankIsNeverReplacedButARestartedOneGetsIn) {
  auto first = std::make_unique<FakeRank>(channel_, 0, 0);
  ASSERT_TRUE(first->Welcomed());
  // A newcomer for the same rank while the first is connected and on time.
  FakeRank hijacker(channel_, 0, 0);
  const grpc::Status status = hijacker.Refusal();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("registered and alive"));
  EXPECT_EQ(hub_->ConnectedRanks(0), std::vector<uint32_t>{0});
  // Once the first one's connection closes, its successor registers.
  first->Finish();
  first.reset();
  bool welcomed = false;
  for (int attempt = 0; attempt < 50 && !welcomed; ++attempt) {
    FakeRank restarted(channel_, 0, 0);
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
  FakeRank leader(channel_, 0, 0);
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

// A group is formed only when every rank of its current generation says its
// communicators formed; one that could not takes the group back to a new
// generation (a new ticket) a second later; a report for an older
// generation counts for nothing.
TEST_F(WorkerHubTest, AGroupIsFormedWhenEveryRankSaysSoAndReformsWhenOneCannot) {
  FakeRank rank(channel_, 0, 0);
  // Generation 0 acknowledges the registration; the group's comes next.
  ASSERT_TRUE(rank.NextWelcome());
  if (rank.generation() == 0) {
    ASSERT_TRUE(rank.NextWelcome());
  }
  const uint64_t first = rank.generation();
  ASSERT_GT(first, 0u);
  const std::string first_ticket = rank.ticket();
  EXPECT_EQ(first_ticket.size(), 32u);
  EXPECT_EQ(hub_->WaitFormed(0, absl::Milliseconds(100)).code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(rank.Formed(first, "could not connect its group"));
  const absl::Status failed = hub_->WaitFormed(0, absl::Seconds(5));
  EXPECT_EQ(failed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(failed.message(), HasSubstr("rank 0: could not connect its group"));
  EXPECT_FALSE(hub_->FormationError(0).ok());
  ASSERT_TRUE(rank.NextWelcome());
  EXPECT_EQ(rank.generation(), first + 1);
  EXPECT_NE(rank.ticket(), first_ticket);
  EXPECT_TRUE(hub_->FormationError(0).ok());
  ASSERT_TRUE(rank.Formed(first, ""));
  EXPECT_EQ(hub_->WaitFormed(0, absl::Milliseconds(200)).code(),
            absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(rank.Formed(first + 1, ""));
  EXPECT_TRUE(hub_->WaitFormed(0, absl::Seconds(5)).ok());
}

}  // namespace
}  // namespace shift
