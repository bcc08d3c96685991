// The core step loop driven with a fake executor on a manual clock (no
// workers, no network): requests run to the end with chunked prefill, the
// policy picks each step's mode and learns its measured time, a failed step
// sends every sequence again from the start, the trace says what each step
// did, and the loop's own overhead counts only between back-to-back steps.
#include "core/step_loop.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace shift {
namespace {

// Samples token seq_id * 1000 + position; a step takes 1 ms per token on
// the manual clock. Fails the steps listed in `fail`.
class FakeExecutor final : public StepExecutor {
 public:
  explicit FakeExecutor(ManualClock* clock) : clock_(clock) {}

  absl::StatusOr<ExecutedStep> Execute(const SchedulerOutput& step, StepMode mode,
                                       absl::Span<const uint64_t> released) override {
    steps.push_back(step);
    modes.push_back(mode);
    releases.emplace_back(released.begin(), released.end());
    ExecutedStep executed;
    executed.started = clock_->Now();
    clock_->Advance(absl::Milliseconds(step.num_tokens));
    executed.completed = clock_->Now();
    if (fail.count(step.step_id)) return absl::InternalError("rank 1 failed");
    for (const ScheduledSequence& s : step.sequences) {
      if (!s.sample) continue;
      const int64_t position = s.start_position + static_cast<int64_t>(s.token_ids.size());
      executed.sampled.push_back(
          {s.seq_id, static_cast<int32_t>(s.seq_id * 1000 + position), -0.5f, {}});
    }
    return executed;
  }

  std::map<uint64_t, bool> fail;
  std::vector<SchedulerOutput> steps;
  std::vector<StepMode> modes;
  std::vector<std::vector<uint64_t>> releases;

 private:
  ManualClock* clock_;
};

// The threshold policy, remembering what it was told.
class RecordingPolicy final : public ShiftPolicy {
 public:
  const std::string& name() const override { return inner_->name(); }
  ShiftDecision Decide(const StepShape& step) override { return inner_->Decide(step); }
  void Observe(const ShiftDecision& decision, double seconds) override {
    observed.push_back({decision.inputs.num_tokens, seconds});
  }
  std::vector<std::pair<int64_t, double>> observed;

 private:
  std::unique_ptr<ShiftPolicy> inner_ = MakeThresholdPolicy(8);
};

class StepLoopTest : public ::testing::Test {
 protected:
  StepLoopTest() : executor_(&clock_) {
    SchedulerConfig config;
    config.max_num_batched_tokens = 12;
    config.num_blocks = 64;
    config.block_size = 4;
    scheduler_ = std::make_unique<Scheduler>(config, &clock_);
  }

  void Add(uint64_t id, int prompt, uint32_t max_tokens, std::string request_id = "",
           double tpot_target = 0) {
    auto r = std::make_unique<Request>();
    r->id = id;
    r->request_id = std::move(request_id);
    for (int i = 0; i < prompt; ++i) r->prompt.push_back(i + 1);
    r->params.max_tokens = max_tokens;
    r->params.tpot_target = tpot_target;
    r->params.ignore_eos = true;
    r->arrival = clock_.Now();
    ASSERT_TRUE(scheduler_->AddRequest(std::move(r)).ok());
  }

  // Runs until nothing is left; each request's tokens and finish.
  std::map<uint64_t, std::vector<int32_t>> RunAll(StepLoop& loop,
                                                  std::vector<StepRecord>* records = nullptr) {
    std::map<uint64_t, std::vector<int32_t>> tokens;
    while (scheduler_->HasWork() || loop.busy()) {
      auto ran = loop.RunStep();
      EXPECT_TRUE(ran.ok()) << ran.status();
      if (!ran.ok() || !ran->has_value()) break;
      for (const RequestUpdate& u : (*ran)->updates) {
        tokens[u.seq_id].insert(tokens[u.seq_id].end(), u.new_tokens.begin(), u.new_tokens.end());
      }
      if (records) records->push_back(**ran);
      clock_.Advance(absl::Microseconds(50));  // the loop's own time
    }
    return tokens;
  }

  ManualClock clock_;
  FakeExecutor executor_;
  RecordingPolicy policy_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(StepLoopTest, RunsRequestsToTheEndAndTheModeFollowsThePolicy) {
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_);
  Add(1, 20, 3);  // two 12-token budgets: chunked
  Add(2, 3, 4);
  std::vector<StepRecord> records;
  const auto tokens = RunAll(loop, &records);
  EXPECT_EQ(tokens.at(1), (std::vector<int32_t>{1020, 1021, 1022}));
  EXPECT_EQ(tokens.at(2), (std::vector<int32_t>{2003, 2004, 2005, 2006}));
  ASSERT_EQ(executor_.steps.size(), policy_.observed.size());
  for (size_t i = 0; i < executor_.steps.size(); ++i) {
    const int64_t n = executor_.steps[i].num_tokens;
    EXPECT_EQ(executor_.modes[i], n > 8 ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
    // The policy learns the measured time: 1 ms per token on the fake.
    EXPECT_EQ(policy_.observed[i].first, n);
    EXPECT_DOUBLE_EQ(policy_.observed[i].second, 1e-3 * n);
    EXPECT_DOUBLE_EQ(records[i].seconds(), 1e-3 * n);
  }
  EXPECT_EQ(executor_.steps[0].num_tokens, 12);  // a chunk of request 1
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
}

TEST_F(StepLoopTest, PlanningAheadGivesTheSameTokensWithEachNextStepStartedEarly) {
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_);
  loop.set_plan_ahead(true);
  Add(1, 5, 3);
  Add(2, 3, 4);
  auto first = loop.RunStep();
  ASSERT_TRUE(first.ok() && first->has_value()) << first.status();
  EXPECT_EQ((*first)->step_id, 1u);
  // Step 2 was planned and started before step 1's results (both
  // prefills): the decodes carry their pending tokens.
  ASSERT_EQ(executor_.steps.size(), 2u);
  EXPECT_TRUE(loop.busy());
  ASSERT_EQ(executor_.steps[1].sequences.size(), 2u);
  for (const ScheduledSequence& s : executor_.steps[1].sequences) {
    EXPECT_EQ(s.token_ids, (std::vector<int32_t>{kPendingToken}));
  }
  std::vector<StepRecord> records = {**first};
  auto tokens = RunAll(loop, &records);
  for (const RequestUpdate& u : (*first)->updates) {
    tokens[u.seq_id].insert(tokens[u.seq_id].begin(), u.new_tokens.begin(), u.new_tokens.end());
  }
  // The fake samples seq·1000 + position: the same tokens as without.
  EXPECT_EQ(tokens.at(1), (std::vector<int32_t>{1005, 1006, 1007}));
  EXPECT_EQ(tokens.at(2), (std::vector<int32_t>{2003, 2004, 2005, 2006}));
  // No step past the last token (max_tokens is known ahead), and every
  // step ran and was finished once.
  EXPECT_EQ(executor_.steps.size(), records.size());
  EXPECT_FALSE(loop.busy());
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
}

TEST_F(StepLoopTest, PlanningAheadAFailedStepVoidsTheStepPlannedAfterIt) {
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_);
  loop.set_plan_ahead(true);
  Add(1, 6, 5);
  Add(2, 5, 5);
  executor_.fail[2] = true;
  ASSERT_TRUE(loop.RunStep().ok());  // step 1 finished, step 2 started (and failed)
  auto failed = loop.RunStep();      // step 3 started ahead, then step 2's failure
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  ASSERT_EQ(executor_.steps.size(), 3u);
  EXPECT_FALSE(loop.busy());
  // Both requests recompute from the start, as new; step 3's tokens were
  // never applied.
  auto again = loop.RunStep();
  ASSERT_TRUE(again.ok() && again->has_value()) << again.status();
  for (const ScheduledSequence& s : executor_.steps[3].sequences) {
    EXPECT_TRUE(s.is_new);
    EXPECT_EQ(s.start_position, 0);
  }
  RunAll(loop);
  EXPECT_FALSE(scheduler_->HasWork());
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
  EXPECT_TRUE(scheduler_->CheckConsistency().ok());
}

TEST_F(StepLoopTest, FailedStepRecomputesEverySequenceFromTheStart) {
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_);
  Add(1, 6, 5);
  Add(2, 5, 5);
  ASSERT_TRUE(loop.RunStep().ok());  // both prefills
  ASSERT_TRUE(loop.RunStep().ok());  // a decode each
  executor_.fail[3] = true;
  auto failed = loop.RunStep();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  // The ranks lost both: they come back whole, as new, prompt and output.
  auto again = loop.RunStep();
  ASSERT_TRUE(again.ok() && again->has_value()) << again.status();
  const SchedulerOutput& step = executor_.steps.back();
  ASSERT_EQ(step.sequences.size(), 2u);
  for (const ScheduledSequence& s : step.sequences) {
    EXPECT_TRUE(s.is_new);
    EXPECT_EQ(s.start_position, 0);
  }
  EXPECT_EQ(step.sequences[0].token_ids.size(), 6u + 2u);
  EXPECT_TRUE(executor_.releases.back().empty());
  // 2 tokens before the failure and 1 with the recompute: the last 2 follow
  // on from position 6 + 3.
  const auto tokens = RunAll(loop);
  EXPECT_EQ(tokens.at(1), (std::vector<int32_t>{1009, 1010}));
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
}

TEST_F(StepLoopTest, TraceSaysWhatEachStepDid) {
  testing::TestTempDir tmp;
  const std::string path = tmp.Sub("steps.jsonl");
  auto trace = StepTrace::Open(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_, trace->get(), 3);
  Add(1, 10, 2, "req-\"a\"\n");
  Add(2, 4, 2);
  RunAll(loop);
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), executor_.steps.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const nlohmann::json& l = lines[i];
    const SchedulerOutput& step = executor_.steps[i];
    EXPECT_EQ(l["group"], 3);
    EXPECT_EQ(l["step"], step.step_id);
    EXPECT_EQ(l["tokens"], step.num_tokens);
    EXPECT_EQ(l["mode"], step.num_tokens > 8 ? "sp" : "tp");
    EXPECT_DOUBLE_EQ(l["measured_s"].get<double>(), 1e-3 * step.num_tokens);
    EXPECT_EQ(l["plan_s"], 0);  // planning takes no time on the manual clock
    EXPECT_EQ(l["ahead"], false);
    ASSERT_EQ(l["seqs"].size(), step.sequences.size());
    for (size_t j = 0; j < step.sequences.size(); ++j) {
      const ScheduledSequence& s = step.sequences[j];
      EXPECT_EQ(l["seqs"][j], nlohmann::json::array({s.seq_id, s.start_position, s.token_ids.size(),
                                                     s.is_new ? 1 : 0}));
    }
  }
  EXPECT_EQ(lines[0]["arrived"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(lines[1]["arrived"], nlohmann::json::array());
  // Arrivals by their request_id (none given for 2), escaped.
  EXPECT_EQ(lines[0]["request_ids"], nlohmann::json({{"1", "req-\"a\"\n"}}));
  EXPECT_EQ(lines[1]["request_ids"], nlohmann::json::object());
  size_t sampled = 0;
  for (const nlohmann::json& l : lines) sampled += l["sampled"].size();
  EXPECT_EQ(sampled, 4u);  // two tokens for each request
}

TEST_F(StepLoopTest, OverheadCountsOnlyBetweenBackToBackSteps) {
  StepLoop loop(scheduler_.get(), &policy_, &executor_, &clock_);
  Add(1, 4, 3);
  auto first = loop.RunStep();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_LT((*first)->overhead_seconds, 0);  // nothing ran before it
  EXPECT_FALSE(executor_.steps.back().follows_previous);
  clock_.Advance(absl::Microseconds(70));
  auto second = loop.RunStep();
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_NEAR((*second)->overhead_seconds, 70e-6, 1e-9);
  // The ranks are told so (their gap before it is the loop's turn-around).
  EXPECT_TRUE(executor_.steps.back().follows_previous);
  RunAll(loop);
  // Idle (nothing to plan), then a new request: not overhead.
  auto idle = loop.RunStep();
  ASSERT_TRUE(idle.ok());
  EXPECT_FALSE(idle->has_value());
  Add(2, 4, 1);
  auto after_idle = loop.RunStep();
  ASSERT_TRUE(after_idle.ok() && after_idle->has_value());
  EXPECT_LT((*after_idle)->overhead_seconds, 0);
  EXPECT_FALSE(executor_.steps.back().follows_previous);
  // A caller that waits for work without planning says so (the router).
  RunAll(loop);
  loop.Idle();
  clock_.Advance(absl::Seconds(2));
  Add(3, 4, 1);
  auto after_wait = loop.RunStep();
  ASSERT_TRUE(after_wait.ok() && after_wait->has_value());
  EXPECT_LT((*after_wait)->overhead_seconds, 0);
  EXPECT_FALSE(executor_.steps.back().follows_previous);
  RunAll(loop);
  const size_t after_wait_steps = executor_.steps.size();
  // Planning ahead: the step after one that followed a wait is planned
  // while that one runs, so it follows it.
  loop.Idle();
  loop.set_plan_ahead(true);
  Add(4, 4, 3);
  auto ahead = loop.RunStep();
  ASSERT_TRUE(ahead.ok() && ahead->has_value());
  ASSERT_EQ(executor_.steps.size(), after_wait_steps + 2);
  EXPECT_FALSE(executor_.steps[after_wait_steps].follows_previous);
  EXPECT_TRUE(executor_.steps[after_wait_steps + 1].follows_previous);
}

}  // namespace
}  // namespace shift

namespace shift {
namespace {

// Steps sized to a latency target, on the fake (1 ms per token, which the
// loop's cost model learns exactly): a larger cap, one TP policy.
class StepBudgetLoopTest : public StepLoopTest {
 protected:
  StepBudgetLoopTest() {
    SchedulerConfig config;
    config.max_num_batched_tokens = 64;
    config.num_blocks = 1024;
    config.block_size = 4;
    scheduler_ = std::make_unique<Scheduler>(config, &clock_);
  }
  // Runs `warm_up` steps, queues `later`'s prompts, runs everything; the
  // trace's lines.
  std::vector<nlohmann::json> Run(StepLoop& loop, std::map<uint64_t, std::vector<int32_t>>* out,
                                  int warm_up = 0,
                                  std::vector<std::pair<uint64_t, int>> later = {}) {
    for (int i = 0; i < warm_up; ++i) {
      auto ran = loop.RunStep();
      EXPECT_TRUE(ran.ok() && ran->has_value());
      if (!ran.ok() || !ran->has_value()) break;
      for (const RequestUpdate& u : (*ran)->updates) {
        (*out)[u.seq_id].insert((*out)[u.seq_id].end(), u.new_tokens.begin(), u.new_tokens.end());
      }
      clock_.Advance(absl::Microseconds(50));
    }
    for (const auto& [id, prompt] : later) Add(id, prompt, 3);
    for (auto& [id, t] : RunAll(loop)) (*out)[id].insert((*out)[id].end(), t.begin(), t.end());
    std::ifstream in(path_);
    std::vector<nlohmann::json> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
    return lines;
  }
  testing::TestTempDir tmp_;
  const std::string path_ = tmp_.Sub("steps.jsonl");
  std::unique_ptr<ShiftPolicy> tp_ = MakeFixedPolicy(StepMode::kTensorParallel);
};

TEST_F(StepBudgetLoopTest, StepsWithDecodesKeepTheTargetOnceTheModelPredicts) {
  auto trace = StepTrace::Open(path_);
  ASSERT_TRUE(trace.ok());
  StepLoop loop(scheduler_.get(), tp_.get(), &executor_, &clock_, trace->get());
  loop.set_tpot_target(0.010);
  for (uint64_t id = 1; id <= 4; ++id) Add(id, 8, 150);  // decodes all along
  Add(5, 40, 3);
  Add(6, 25, 3);
  // A long prompt once the model has seen steps of all sizes.
  std::map<uint64_t, std::vector<int32_t>> tokens;
  const std::vector<nlohmann::json> lines = Run(loop, &tokens, 20, {{7, 300}});
  for (uint64_t id = 1; id <= 7; ++id) EXPECT_EQ(tokens[id].size(), id <= 4 ? 150u : 3u) << id;
  int sized = 0, unpredicted = 0;
  for (const nlohmann::json& l : lines) {
    ASSERT_FALSE(l["budget"].is_null());
    const std::string reason = l["budget_reason"];
    if (reason == "unpredicted") {
      ++unpredicted;
      continue;
    }
    if (l["decodes"].get<int>() == 0) continue;
    // Within the target: 10 ms less the loop's 50 us since the last token.
    EXPECT_LE(l["measured_s"].get<double>(), 0.010 + 1e-9) << l.dump();
    if (reason == "target") {
      ++sized;
      // The prediction it was planned with: the fake's time, learnt exactly.
      ASSERT_FALSE(l["budget_predicted_s"].is_null()) << l.dump();
      EXPECT_NEAR(l["budget_predicted_s"].get<double>(), l["measured_s"].get<double>(), 1e-6);
    }
  }
  EXPECT_GT(unpredicted, 0);  // the fixed cap until 16 steps were seen
  EXPECT_GT(sized, 10);       // the long prompt went in chunks of about 5
  // Without the target, its chunks take the cap: steps of 64 ms.
  EXPECT_EQ(loop.target_unmet_steps(), 0);
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
}

TEST_F(StepBudgetLoopTest, ARequestsOwnTargetSizesStepsWhileItDecodes) {
  auto trace = StepTrace::Open(path_);
  ASSERT_TRUE(trace.ok());
  StepLoop loop(scheduler_.get(), tp_.get(), &executor_, &clock_, trace->get());
  // No target for the group; request 4 asks for 10 ms and decodes for 60
  // tokens, the others for 150 with none.
  for (uint64_t id = 1; id <= 3; ++id) Add(id, 8, 150);
  Add(4, 8, 60, "", 0.010);
  Add(5, 40, 3);
  Add(6, 25, 3);
  std::map<uint64_t, std::vector<int32_t>> tokens;
  const std::vector<nlohmann::json> lines = Run(loop, &tokens, 20, {{7, 300}});
  EXPECT_EQ(tokens[4].size(), 60u);
  EXPECT_EQ(tokens[7].size(), 3u);
  int sized = 0, after = 0, slow_after = 0;
  bool four_done = false;
  for (const nlohmann::json& l : lines) {
    if (l["budget"].is_null()) {
      // Once 4 ended: no target, the fixed cap (the long prompt's chunks).
      if (sized > 0) four_done = true;
      if (four_done) ++after;
      if (four_done && l["measured_s"].get<double>() > 0.010) ++slow_after;
      continue;
    }
    ASSERT_FALSE(four_done) << "a budget after request 4 ended: " << l.dump();
    if (l["budget_reason"] == "target") {
      ++sized;
      EXPECT_LE(l["measured_s"].get<double>(), 0.010 + 1e-9) << l.dump();
    }
  }
  EXPECT_GT(sized, 10);
  EXPECT_GT(after, 0);
  EXPECT_GT(slow_after, 0);
  EXPECT_EQ(scheduler_->blocks().num_used(), 0);
}

TEST_F(StepBudgetLoopTest, ATargetUnderTheDecodesAloneRunsThemAloneButNeverStarvesAPrefill) {
  auto trace = StepTrace::Open(path_);
  ASSERT_TRUE(trace.ok());
  StepLoop loop(scheduler_.get(), tp_.get(), &executor_, &clock_, trace->get());
  loop.set_tpot_target(0.002);  // 4 decodes take 4 ms
  for (uint64_t id = 1; id <= 4; ++id) Add(id, 8, 120);
  Add(5, 40, 3);
  Add(6, 25, 3);
  std::map<uint64_t, std::vector<int32_t>> tokens;
  const std::vector<nlohmann::json> lines = Run(loop, &tokens, 20, {{7, 40}, {8, 30}});
  EXPECT_EQ(tokens[8].size(), 3u);  // served all the same
  EXPECT_GT(loop.target_unmet_steps(), 0);
  // The bound: never more than kStarvationSteps steps in a row with
  // prefills waiting and none budgeted; then a block's worth.
  int in_a_row = 0, starvation = 0;
  for (const nlohmann::json& l : lines) {
    const std::string reason = l["budget_reason"];
    if (reason == "target_unmet") {
      EXPECT_EQ(l["budget"], 0);
      ++in_a_row;
      EXPECT_LE(in_a_row, StepLoop::kStarvationSteps);
    } else {
      if (reason == "starvation") {
        // A block, or what is left after the prefix the cache holds (7 and
        // 8 start with 5's prompt).
        ++starvation;
        EXPECT_GT(l["budget"], 0);
        EXPECT_LE(l["budget"], 4);
      }
      in_a_row = 0;
    }
  }
  EXPECT_GT(starvation, 0);
}

}  // namespace
}  // namespace shift
