// Real shift-worker processes (P = 2 and 4) on 127.0.0.1, driven through the
// router's control streams and rendezvous store: every mode schedule gives
// the single-rank engine's logits and tokens bit for bit, plans travel as
// diffs, and every process is stopped at the end.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/subprocess.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "router/rendezvous_service.h"
#include "router/worker_hub.h"
#include "tests/testing/internal_server.h"
#include "tests/testing/recorded_run.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift {
namespace {

namespace rpc = v1::internal;

struct Case {
  int ranks;
  int64_t kv_heads;
};

// The whole HTTP response to GET `path` from host:port (empty on failure).
std::string HttpGet(const std::string& address, const std::string& path) {
  const auto colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

// The value of the sample `series` (name{labels}) in a Prometheus text
// exposition: the first with that name and at least those labels; -1: none.
double MetricValue(const std::string& text, const std::string& series) {
  const size_t brace = series.find('{');
  const std::string name = series.substr(0, brace);
  std::vector<std::string> wanted;
  if (brace != std::string::npos) {
    wanted = absl::StrSplit(series.substr(brace + 1, series.size() - brace - 2), ',');
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    const absl::string_view labels = line.substr(0, line.rfind(' '));
    bool all = true;
    for (const std::string& label : wanted) all = all && absl::StrContains(labels, label);
    if (all) return std::stod(std::string(line.substr(line.rfind(' ') + 1)));
  }
  return -1;
}

class WorkerGroupTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    options.config.num_key_value_heads = GetParam().kv_heads;
    options.seed = 31;
    options.dtype = DType::kF32;
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), options).ok());
    auto files = OpenModelFiles(tmp_.Sub("model"));
    ASSERT_TRUE(files.ok()) << files.status();
    recording_ = testing::RecordSingleRank(*files);

    WorkerHubOptions hub_options;
    hub_options.heartbeat_interval = absl::Milliseconds(200);
    hub_options.heartbeat_timeout = absl::Seconds(3);
    hub_options.internal_token = testing::kInternalToken;
    hub_ = std::make_unique<WorkerHub>(
        [this](uint32_t group, uint64_t generation, std::map<uint32_t, std::string> tickets) {
          store_.AdvanceGeneration(group, generation, std::move(tickets));
        },
        hub_options);
    int port = 0;
    server_ = testing::ServeInternal(&store_, hub_.get(), &port);
    ASSERT_NE(server_, nullptr);

    port_ = port;
    for (int r = 0; r < GetParam().ranks; ++r) {
      absl::StatusOr<Subprocess> worker = SpawnRank(r);
      ASSERT_TRUE(worker.ok()) << worker.status();
      workers_.push_back(std::move(*worker));
    }
    ASSERT_TRUE(hub_->WaitForGroup(0, GetParam().ranks, absl::Seconds(60)).ok());
  }

  // Sends `plan` to group 0 and waits for every rank's result.
  absl::StatusOr<std::vector<rpc::StepResult>> RunStep(rpc::StepPlan plan) {
    if (absl::Status started = hub_->StartStep(0, std::move(plan)); !started.ok()) return started;
    auto outcome = hub_->WaitStep(0, absl::Seconds(60));
    if (!outcome.ok()) return outcome.status();
    return std::move(outcome->results);
  }

  // Starts rank `r` of the group as a shift-worker process.
  absl::StatusOr<Subprocess> SpawnRank(int r) {
    const char* bin = std::getenv("SHIFT_BINARY_DIR");
    const std::string worker = std::string(bin ? bin : ".") + "/worker/shift-worker";
    std::vector<std::string> args = {
        worker,
        "--router=127.0.0.1:" + std::to_string(port_),
        "--rank=" + std::to_string(r),
        "--world_size=" + std::to_string(GetParam().ranks),
        "--model=" + tmp_.Sub("model"),
        "--kv_cache_bytes=8388608",
        "--block_size=4",
        "--threads=1",
        "--rendezvous_timeout_ms=30000",
        "--internal_token_file=" + testing::WriteInternalToken(tmp_.path().string())};
    return Subprocess::Start(args);
  }

  void TearDown() override {
    if (hub_) hub_->Shutdown(0, "test over", /*reconnect=*/false);
    // Every worker exits on Shutdown; any that does not within 10 s is killed.
    for (Subprocess& worker : workers_) {
      const absl::StatusOr<int> exit_code = worker.Wait(absl::Seconds(10));
      if (!exit_code.ok()) {
        ADD_FAILURE() << "worker " << worker.pid() << " did not exit on Shutdown";
        worker.Signal(SIGKILL).IgnoreError();
        worker.Wait().IgnoreError();
      } else {
        EXPECT_EQ(*exit_code, 0) << "worker " << worker.pid();
      }
    }
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  // Replays the recording as plans with diffs and expects the leader's
  // tokens and logits of every step to be the single-rank engine's.
  void ExpectSameAsSingleRank(const std::vector<v1::Mode>& modes, const std::string& name) {
    const absl::Status status = Replay(modes, name);
    EXPECT_TRUE(status.ok()) << name << ": " << status;
  }

  // The same, returning the first failure of the group (a step it could not
  // run) instead of failing the test.
  absl::Status Replay(const std::vector<v1::Mode>& modes, const std::string& name) {
    std::map<uint64_t, size_t> blocks_sent;  // per sequence, this replay
    for (size_t i = 0; i < recording_.steps.size(); ++i) {
      rpc::StepPlan plan;
      plan.set_step_id(++step_id_);
      plan.set_mode(modes[i]);
      ++steps_[modes[i] == v1::MODE_SP ? 1 : 0];
      plan.set_return_logits(true);
      for (const SequenceStep& s : recording_.steps[i]) {
        rpc::ScheduledSequence* seq = plan.add_sequences();
        seq->set_seq_id(s.seq_id);
        const bool is_new = !blocks_sent.count(s.seq_id);
        seq->set_is_new(is_new);
        if (is_new) {
          seq->mutable_sampling()->set_temperature(s.sampling.temperature);
          seq->mutable_sampling()->set_top_p(s.sampling.top_p);
          seq->mutable_sampling()->set_top_k(s.sampling.top_k);
          seq->mutable_sampling()->set_seed(s.sampling.seed);
        }
        // Only the blocks the ranks have not seen yet.
        size_t& sent = blocks_sent[s.seq_id];
        for (size_t b = sent; b < s.block_table.size(); ++b)
          seq->add_new_block_ids(s.block_table[b]);
        sent = s.block_table.size();
        seq->mutable_token_ids()->Add(s.token_ids.begin(), s.token_ids.end());
        seq->set_start_position(static_cast<uint32_t>(s.start_position));
        seq->set_sample(s.sample);
      }
      auto results = RunStep(std::move(plan));
      if (!results.ok()) return results.status();
      EXPECT_EQ(results->size(), static_cast<size_t>(GetParam().ranks));
      const auto& leader = (*results)[0];
      const auto& want = recording_.outputs[i];
      EXPECT_EQ(leader.sampled_size(), static_cast<int>(want.size())) << name << " step " << i;
      if (leader.sampled_size() != static_cast<int>(want.size())) continue;
      for (size_t j = 0; j < want.size(); ++j) {
        const auto& got = leader.sampled(static_cast<int>(j));
        EXPECT_EQ(got.seq_id(), want[j].seq_id);
        EXPECT_EQ(got.token_id(), want[j].token_id) << name << " step " << i;
        EXPECT_EQ(static_cast<size_t>(got.logits_size()), want[j].logits.size());
        if (static_cast<size_t>(got.logits_size()) != want[j].logits.size()) continue;
        EXPECT_EQ(std::memcmp(got.logits().data(), want[j].logits.data(),
                              want[j].logits.size() * sizeof(float)),
                  0)
            << name << " step " << i;
      }
      for (const auto& r : *results) {
        EXPECT_GT(r.timings().bytes_sent(), 0u) << "rank " << r.rank();
      }
      // Release the sequences at the end of the replay.
      if (i + 1 == recording_.steps.size()) {
        rpc::StepPlan release;
        release.set_step_id(++step_id_);
        for (auto& [id, n] : blocks_sent) release.add_released_seq_ids(id);
        ++steps_[0];  // a plan with no mode runs as TP (it only releases)
        auto released = RunStep(std::move(release));
        if (!released.ok()) return released.status();
      }
    }
    return absl::OkStatus();
  }

  testing::TestTempDir tmp_;
  testing::Recording recording_;
  RendezvousService store_{1, testing::kInternalToken};
  std::unique_ptr<WorkerHub> hub_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<Subprocess> workers_;  // by rank
  int port_ = 0;
  uint64_t step_id_ = 0;
  double steps_[2] = {0, 0};  // plans sent per mode: TP, SP
};

TEST_P(WorkerGroupTest, EveryModeScheduleGivesTheSingleRankBits) {
  const size_t steps = recording_.steps.size();
  std::vector<v1::Mode> tp(steps, v1::MODE_TP), sp(steps, v1::MODE_SP), alternating, random,
      sp_then_tp, tp_then_sp;
  std::mt19937 rng(GetParam().ranks * 7);
  for (size_t i = 0; i < steps; ++i) {
    alternating.push_back(i % 2 ? v1::MODE_SP : v1::MODE_TP);
    random.push_back(rng() % 2 ? v1::MODE_SP : v1::MODE_TP);
    sp_then_tp.push_back(i < 4 ? v1::MODE_SP : v1::MODE_TP);
    tp_then_sp.push_back(i < 4 ? v1::MODE_TP : v1::MODE_SP);
  }
  ExpectSameAsSingleRank(tp, "all TP");
  ExpectSameAsSingleRank(sp, "all SP");
  ExpectSameAsSingleRank(alternating, "alternating");
  ExpectSameAsSingleRank(random, "random");
  ExpectSameAsSingleRank(sp_then_tp, "prefill SP, decode TP");
  ExpectSameAsSingleRank(tp_then_sp, "prefill TP, decode SP");

  // Every rank serves health (SERVING once ready) and /metrics that count
  // its steps by mode and pass promtool.
  for (int r = 0; r < GetParam().ranks; ++r) {
    auto reg = hub_->Registration(0, r);
    ASSERT_TRUE(reg.ok());
    auto channel = grpc::CreateChannel(reg->address(), grpc::InsecureChannelCredentials());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckResponse health;
    ASSERT_TRUE(grpc::health::v1::Health::NewStub(channel)
                    ->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &health)
                    .ok());
    EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    const std::string metrics = HttpGet(reg->metrics_address(), "/metrics");
    EXPECT_EQ(MetricValue(metrics, "shift_worker_steps_total{mode=\"tp\"}"), steps_[0]) << metrics;
    EXPECT_EQ(MetricValue(metrics, "shift_worker_steps_total{mode=\"sp\"}"), steps_[1]) << metrics;
    EXPECT_GE(MetricValue(metrics, "shift_worker_step_communication_bytes_total{mode=\"sp\"}"), 0);
    // Every series says which model, group and rank it is.
    const std::string ids = absl::StrCat("model_name=\"model\",group=\"0\",rank=\"", r, "\"");
    EXPECT_GE(MetricValue(metrics, absl::StrCat("shift_worker_steps_total{", ids, "}")), 0)
        << metrics;
    // The backend's per-operation counters.
    EXPECT_GT(MetricValue(metrics, "shift_worker_op_calls_total{op=\"attention\"}"), 0) << metrics;
    EXPECT_GT(MetricValue(metrics, "shift_worker_op_flops_total{op=\"gemm\"}"), 0) << metrics;
    EXPECT_EQ(MetricValue(metrics, "shift_worker_weight_bytes"), reg->weight_bytes()) << metrics;
    // No FP8 weights in this model (parallel_engine_test counts them).
    EXPECT_EQ(MetricValue(metrics, "shift_worker_fp8_weight_bytes"), 0) << metrics;
    if (access("/usr/bin/promtool", X_OK) == 0) {
      const std::string file = tmp_.Sub("metrics" + std::to_string(r) + ".txt");
      FILE* out = std::fopen(file.c_str(), "w");
      std::fputs(metrics.substr(metrics.find("\r\n\r\n") + 4).c_str(), out);
      std::fclose(out);
      const std::string check = "/usr/bin/promtool check metrics < " + file + " 2>&1";
      EXPECT_EQ(std::system(check.c_str()), 0) << "promtool rejects rank " << r << "'s metrics";
    }
  }
}

// A group losing ranks: killed mid-run (its stream closes) and frozen (its
// heartbeats stop). The driver is told which rank and why within a bounded
// time, nothing hangs, and a restarted rank brings the group back under a new
// generation with the single-rank bits.
using WorkerRecoveryTest = WorkerGroupTest;

TEST_P(WorkerRecoveryTest, LostRanksAreNamedAndRestartedRanksRejoin) {
  using Clock = std::chrono::steady_clock;
  const size_t steps = recording_.steps.size();
  std::vector<v1::Mode> tp(steps, v1::MODE_TP), sp(steps, v1::MODE_SP), random;
  std::mt19937 rng(5);
  for (size_t i = 0; i < steps; ++i) random.push_back(rng() % 2 ? v1::MODE_SP : v1::MODE_TP);
  ExpectSameAsSingleRank(random, "before any loss");
  const int victim = GetParam().ranks - 1;
  const uint64_t first_generation = hub_->Generation(0);
  EXPECT_GE(first_generation, 1u);

  // Killed while the group runs steps.
  std::atomic<int64_t> killed_at{0};
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    killed_at = Clock::now().time_since_epoch().count();
    EXPECT_TRUE(workers_[victim].Signal(SIGKILL).ok());
  });
  absl::Status failure;
  for (int i = 0; i < 200 && failure.ok(); ++i) failure = Replay(random, "while killing");
  const Clock::time_point failed_at = Clock::now();
  killer.join();
  ASSERT_FALSE(failure.ok()) << "the group never noticed the kill";
  const double seconds =
      std::chrono::duration<double>(failed_at - Clock::time_point(Clock::duration(killed_at)))
          .count();
  EXPECT_EQ(failure.code(), absl::StatusCode::kUnavailable) << failure;
  const std::string named = "rank " + std::to_string(victim) + " (its control stream closed)";
  EXPECT_NE(failure.message().find(named), std::string::npos) << failure;
  EXPECT_LT(seconds, 10.0) << "the loss took " << seconds << " s to reach the driver";
  std::printf("kill to UNAVAILABLE: %.3f s\n", seconds);
  const absl::StatusOr<int> killed = workers_[victim].Wait();
  ASSERT_TRUE(killed.ok()) << killed.status();
  EXPECT_EQ(*killed, -SIGKILL);

  // The survivors stay up, and the incomplete group refuses steps at once.
  for (int r = 0; r < victim; ++r) EXPECT_TRUE(workers_[r].Running()) << r;
  const Clock::time_point asked = Clock::now();
  const absl::Status refused = Replay(tp, "incomplete");
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_NE(refused.message().find(named), std::string::npos) << refused;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - asked).count(), 1.0);

  // Restarted, it rejoins under a new generation and the group serves again.
  absl::StatusOr<Subprocess> restarted = SpawnRank(victim);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  workers_[victim] = std::move(*restarted);
  ASSERT_TRUE(hub_->WaitForGroup(0, GetParam().ranks, absl::Seconds(60)).ok());
  const uint64_t second_generation = hub_->Generation(0);
  EXPECT_GT(second_generation, first_generation);
  ExpectSameAsSingleRank(random, "after the restart");

  // Frozen (alive, stream open, silent): lost after the heartbeat timeout.
  ASSERT_TRUE(workers_[0].Signal(SIGSTOP).ok());
  const Clock::time_point frozen_at = Clock::now();
  const absl::Status silent = Replay(tp, "frozen leader");
  const double silent_seconds = std::chrono::duration<double>(Clock::now() - frozen_at).count();
  EXPECT_EQ(silent.code(), absl::StatusCode::kUnavailable) << silent;
  EXPECT_NE(silent.message().find("rank 0 (no heartbeat for"), std::string::npos) << silent;
  std::printf("freeze to UNAVAILABLE: %.3f s (heartbeat timeout 3 s)\n", silent_seconds);
  EXPECT_GE(silent_seconds, 2.5);
  EXPECT_LT(silent_seconds, 10.0);
  ASSERT_TRUE(workers_[0].Signal(SIGKILL).ok());
  ASSERT_TRUE(workers_[0].Wait().ok());
  restarted = SpawnRank(0);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  workers_[0] = std::move(*restarted);
  ASSERT_TRUE(hub_->WaitForGroup(0, GetParam().ranks, absl::Seconds(60)).ok());
  EXPECT_GT(hub_->Generation(0), second_generation);
  ExpectSameAsSingleRank(sp, "after the second restart");
}

INSTANTIATE_TEST_SUITE_P(Processes, WorkerRecoveryTest, ::testing::Values(Case{2, 2}, Case{4, 2}),
                         [](const auto& info) {
                           return absl::StrCat("P", info.param.ranks, "Hkv", info.param.kv_heads);
                         });

INSTANTIATE_TEST_SUITE_P(Processes, WorkerGroupTest,
                         ::testing::Values(Case{2, 2}, Case{4, 2}, Case{4, 4}),
                         [](const auto& info) {
                           return absl::StrCat("P", info.param.ranks, "Hkv", info.param.kv_heads);
                         });

}  // namespace
}  // namespace shift
