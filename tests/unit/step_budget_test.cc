// The step budget against fake cost models: the largest prefill within the
// target, a mode switch when it admits more work, decode-only when not even
// the decodes fit (said), the starvation guard, and the fixed cap until the
// model predicts; and the policies' candidate modes.
#include "core/step_budget.h"

#include <limits>
#include <optional>
#include <utility>

#include "core/step_cost.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

// 8 decodes at context 100, then two prompts of 1,000 tokens.
BudgetQuestion Question(double seconds) {
  BudgetQuestion q;
  q.decodes.num_tokens = 8;
  q.decodes.num_sequences = 8;
  q.decodes.num_decodes = 8;
  q.decodes.max_context = 100;
  q.decodes.attention = 8 * 100;
  q.prefills = {{0, 1000}, {0, 1000}};
  q.max_tokens = 2048;
  q.max_sequences = 64;
  q.seconds = seconds;
  return q;
}

// TP: 1 ms + 10 us a token. SP: 3 ms + 5 us a token (faster past 400).
double Tp(const StepShape& s) { return 1e-3 + 1e-5 * s.num_tokens; }
double Sp(const StepShape& s) { return 3e-3 + 5e-6 * s.num_tokens; }

ModePredictor Only(StepMode mode) {
  return [mode](const StepShape& s) -> std::optional<std::pair<StepMode, double>> {
    return std::make_pair(mode, mode == StepMode::kTensorParallel ? Tp(s) : Sp(s));
  };
}

ModePredictor Faster() {
  return [](const StepShape& s) -> std::optional<std::pair<StepMode, double>> {
    return Tp(s) <= Sp(s) ? std::make_pair(StepMode::kTensorParallel, Tp(s))
                          : std::make_pair(StepMode::kSequenceParallel, Sp(s));
  };
}

TEST(StepBudgetTest, TheLargestPrefillWithinTheTarget) {
  // 5 ms in TP: 1 ms + 10 us x (8 + p) <= 5 ms, p <= 392.
  const BudgetChoice c = ChooseBudget(Question(5e-3), Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTarget);
  EXPECT_EQ(c.prefill_tokens, 392);
  EXPECT_EQ(c.mode, StepMode::kTensorParallel);
  EXPECT_LE(c.predicted_seconds, 5e-3);
  EXPECT_GT(Tp(ShapeWithPrefill(Question(5e-3), 393)), 5e-3);
}

TEST(StepBudgetTest, SwitchesModeWhenThatAdmitsMoreWork) {
  // 10 ms: TP admits 892 tokens, SP 1,392 (3 ms + 5 us x (8 + p)).
  const BudgetChoice c = ChooseBudget(Question(10e-3), Faster());
  EXPECT_EQ(c.reason, BudgetReason::kTarget);
  EXPECT_EQ(c.mode, StepMode::kSequenceParallel);
  EXPECT_EQ(c.prefill_tokens, 1392);
  // The shape it sized: both prompts, the second cut.
  const StepShape s = ShapeWithPrefill(Question(10e-3), 1392);
  EXPECT_EQ(s.num_tokens, 1400);
  EXPECT_EQ(s.num_sequences, 10);
  EXPECT_EQ(s.attention, 800 + 1000 * 1001 / 2 + 392 * 393 / 2);
  EXPECT_EQ(s.max_context, 1000);
}

TEST(StepBudgetTest, TheCapWhenEverythingFitsOrNoDecodesWait) {
  BudgetChoice c = ChooseBudget(Question(1.0), Faster());
  EXPECT_EQ(c.reason, BudgetReason::kCap);
  EXPECT_EQ(c.prefill_tokens, 2000);  // all the prompts, under the cap
  BudgetQuestion q = Question(5e-3);
  q.max_tokens = 512;
  q.seconds = std::numeric_limits<double>::infinity();  // nothing decodes
  c = ChooseBudget(q, Faster());
  EXPECT_EQ(c.reason, BudgetReason::kCap);
  EXPECT_EQ(c.prefill_tokens, 504);
}

TEST(StepBudgetTest, DecodesOnlyWhenEvenTheyMissTheTargetAndItIsSaid) {
  const BudgetChoice c = ChooseBudget(Question(1e-3), Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTargetUnmet);
  EXPECT_EQ(c.prefill_tokens, 0);
  EXPECT_NEAR(c.predicted_seconds, Tp(Question(1e-3).decodes), 1e-12);
}

TEST(StepBudgetTest, TheStarvationGuardAdmitsAChunkAnyway) {
  BudgetQuestion q = Question(1e-3);
  q.min_prefill = 16;
  BudgetChoice c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kStarvation);
  EXPECT_EQ(c.prefill_tokens, 16);
  // Not below what the target gives anyway.
  q.seconds = 5e-3;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTarget);
  EXPECT_EQ(c.prefill_tokens, 392);
}

TEST(StepBudgetTest, APromptAboutToMissItsTtftTargetGetsWhatItNeeds) {
  // 392 tokens fit 5 ms; a step of them takes 5 ms.
  BudgetQuestion q = Question(5e-3);
  q.prefills[0].ttft_left = 0.050;  // 10 such steps: 100 tokens a step do
  BudgetChoice c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTarget);
  EXPECT_EQ(c.prefill_tokens, 392);
  // 12 ms: two steps of 500 would do, but a step of 500 takes 6.08 ms, so
  // only one fits: the whole prompt now (an 11.08 ms step).
  q.prefills[0].ttft_left = 0.012;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTtft);
  EXPECT_EQ(c.prefill_tokens, 1000);
  EXPECT_NEAR(c.predicted_seconds, 1e-3 + 1e-5 * 1008, 1e-12);
  // The second prompt waits for the first: its 32 ms left are six steps for
  // 2,000 tokens (334 a step, within the target's 392); 15 ms are not.
  q.prefills[0].ttft_left = std::numeric_limits<double>::infinity();
  q.prefills[1].ttft_left = 0.032;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTarget);
  q.prefills[1].ttft_left = 0.015;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTtft);
  EXPECT_EQ(c.prefill_tokens, 2000);
  // Missed already: all of it, within the cap.
  q.max_tokens = 1024;
  q.prefills[1].ttft_left = -0.5;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTtft);
  EXPECT_EQ(c.prefill_tokens, 1016);
  // Even under a target the decodes alone miss.
  q = Question(1e-3);
  q.prefills[0].ttft_left = 0;
  c = ChooseBudget(q, Only(StepMode::kTensorParallel));
  EXPECT_EQ(c.reason, BudgetReason::kTtft);
  EXPECT_EQ(c.prefill_tokens, 1000);
}

TEST(StepBudgetTest, LatencyTargetsAreZeroOrInRange) {
  EXPECT_TRUE(ValidateLatencyTarget(0, "--x").ok());
  EXPECT_TRUE(ValidateLatencyTarget(0.1, "--x").ok());
  EXPECT_TRUE(ValidateLatencyTarget(600000, "--x").ok());
  for (double bad : {0.05, -1.0, 600001.0, std::numeric_limits<double>::quiet_NaN()}) {
    const absl::Status s = ValidateLatencyTarget(bad, "tpot_slo_ms");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("tpot_slo_ms"), absl::string_view::npos) << s;
  }
}

TEST(StepBudgetTest, TheFixedCapUntilTheModelPredicts) {
  auto none = [](const StepShape&) -> std::optional<std::pair<StepMode, double>> {
    return std::nullopt;
  };
  const BudgetChoice c = ChooseBudget(Question(5e-3), none);
  EXPECT_EQ(c.reason, BudgetReason::kUnpredicted);
  EXPECT_EQ(c.prefill_tokens, 2000);
}

TEST(StepBudgetTest, TheSequenceLimitBoundsThePrefills) {
  BudgetQuestion q = Question(1.0);
  q.max_sequences = 9;  // room for one prompt
  const BudgetChoice c = ChooseBudget(q, Faster());
  EXPECT_EQ(c.prefill_tokens, 1000);
  EXPECT_EQ(ShapeWithPrefill(q, 2000).num_sequences, 9);
}

TEST(StepBudgetTest, PoliciesSayWhichModesTheyMayPick) {
  StepShape big;
  big.num_tokens = 500;
  StepShape small;
  small.num_tokens = 10;
  auto threshold = MakeThresholdPolicy(100);
  EXPECT_EQ(threshold->CandidateModes(big), std::vector<StepMode>{StepMode::kSequenceParallel});
  EXPECT_EQ(threshold->CandidateModes(small), std::vector<StepMode>{StepMode::kTensorParallel});
  auto tp = MakeFixedPolicy(StepMode::kTensorParallel);
  EXPECT_EQ(tp->CandidateModes(big), std::vector<StepMode>{StepMode::kTensorParallel});
  // The cost policy: the threshold's pick until fitted, then either.
  auto cost = MakeCostPolicy(100, /*min_samples=*/2, /*explore_every=*/0);
  EXPECT_EQ(cost->CandidateModes(big), std::vector<StepMode>{StepMode::kSequenceParallel});
  for (StepMode mode : {StepMode::kTensorParallel, StepMode::kSequenceParallel}) {
    for (int i = 0; i < 2; ++i) {
      ShiftDecision d;
      d.mode = mode;
      d.inputs = big;
      cost->Observe(d, 1e-3);
    }
  }
  EXPECT_EQ(cost->CandidateModes(small).size(), 2u);
}

TEST(StepCostModelTest, PredictsOnlyAfterEnoughStepsOfTheMode) {
  StepCostModel model;
  StepShape s;
  s.num_tokens = 64;
  s.num_sequences = 4;
  EXPECT_LT(model.Predict(s, StepMode::kTensorParallel, 1), 0);
  for (int i = 0; i < 3; ++i) model.Add(StepMode::kTensorParallel, s, 2e-3);
  EXPECT_LT(model.Predict(s, StepMode::kTensorParallel, 4), 0);
  EXPECT_NEAR(model.Predict(s, StepMode::kTensorParallel, 3), 2e-3, 1e-6);
  EXPECT_LT(model.Predict(s, StepMode::kSequenceParallel, 1), 0);
  EXPECT_EQ(model.samples(StepMode::kTensorParallel), 3);
}

}  // namespace
}  // namespace shift
