// The shift policies: the threshold policy picks SP exactly above its token
// threshold, fixed policies never change, every decision carries its inputs,
// and policies are made by name.
#include "core/shift_policy.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace shift {
namespace {

StepShape Shape(int64_t tokens, int64_t seqs = 3, int64_t decodes = 2, int64_t context = 77) {
  StepShape s;
  s.num_tokens = tokens;
  s.num_sequences = seqs;
  s.num_decodes = decodes;
  s.max_context = context;
  return s;
}

void ExpectSameShape(const StepShape& got, const StepShape& want) {
  EXPECT_EQ(got.num_tokens, want.num_tokens);
  EXPECT_EQ(got.num_sequences, want.num_sequences);
  EXPECT_EQ(got.num_decodes, want.num_decodes);
  EXPECT_EQ(got.max_context, want.max_context);
}

TEST(ShiftPolicyTest, ThresholdPicksSpOnlyAboveThreshold) {
  auto policy = MakeThresholdPolicy(100);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->name(), "threshold");
  for (int64_t tokens : {0, 1, 50, 99, 100}) {
    const ShiftDecision d = policy->Decide(Shape(tokens));
    EXPECT_EQ(d.mode, StepMode::kTensorParallel) << tokens;
    ExpectSameShape(d.inputs, Shape(tokens));
  }
  for (int64_t tokens : {int64_t{101}, int64_t{102}, int64_t{4096}, int64_t{1} << 40}) {
    const ShiftDecision d = policy->Decide(Shape(tokens));
    EXPECT_EQ(d.mode, StepMode::kSequenceParallel) << tokens;
    ExpectSameShape(d.inputs, Shape(tokens));
  }
}

TEST(ShiftPolicyTest, ThresholdLooksOnlyAtTokens) {
  auto policy = MakeThresholdPolicy(10);
  // Many sequences or a long context do not change the decision.
  EXPECT_EQ(policy->Decide(Shape(10, 1000, 1000, 1 << 20)).mode, StepMode::kTensorParallel);
  EXPECT_EQ(policy->Decide(Shape(11, 1, 0, 1)).mode, StepMode::kSequenceParallel);
  // Threshold zero: any non-empty step is SP.
  auto zero = MakeThresholdPolicy(0);
  EXPECT_EQ(zero->Decide(Shape(0)).mode, StepMode::kTensorParallel);
  EXPECT_EQ(zero->Decide(Shape(1)).mode, StepMode::kSequenceParallel);
}

TEST(ShiftPolicyTest, FixedPoliciesNeverChange) {
  auto tp = MakeFixedPolicy(StepMode::kTensorParallel);
  auto sp = MakeFixedPolicy(StepMode::kSequenceParallel);
  ASSERT_NE(tp, nullptr);
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(tp->name(), "tp");
  EXPECT_EQ(sp->name(), "sp");
  for (int64_t tokens : {0, 1, 100, 1000000}) {
    const ShiftDecision a = tp->Decide(Shape(tokens));
    const ShiftDecision b = sp->Decide(Shape(tokens));
    EXPECT_EQ(a.mode, StepMode::kTensorParallel) << tokens;
    EXPECT_EQ(b.mode, StepMode::kSequenceParallel) << tokens;
    ExpectSameShape(a.inputs, Shape(tokens));
    ExpectSameShape(b.inputs, Shape(tokens));
  }
}

TEST(ShiftPolicyTest, MakeByName) {
  auto threshold = MakeShiftPolicy("threshold", 5);
  ASSERT_TRUE(threshold.ok()) << threshold.status();
  EXPECT_EQ((*threshold)->name(), "threshold");
  EXPECT_EQ((*threshold)->Decide(Shape(5)).mode, StepMode::kTensorParallel);
  EXPECT_EQ((*threshold)->Decide(Shape(6)).mode, StepMode::kSequenceParallel);

  auto tp = MakeShiftPolicy("tp", 5);
  ASSERT_TRUE(tp.ok()) << tp.status();
  EXPECT_EQ((*tp)->name(), "tp");
  EXPECT_EQ((*tp)->Decide(Shape(1000)).mode, StepMode::kTensorParallel);

  auto sp = MakeShiftPolicy("sp", 5);
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ((*sp)->name(), "sp");
  EXPECT_EQ((*sp)->Decide(Shape(1)).mode, StepMode::kSequenceParallel);
}

TEST(ShiftPolicyTest, UnknownNameIsInvalidArgument) {
  for (const char* name : {"", "bogus", "TP", "Threshold", "sp "}) {
    auto policy = MakeShiftPolicy(name, 5);
    EXPECT_FALSE(policy.ok()) << name;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

// The cost policy learns two linear step-time laws that cross at 333
// tokens, from noisy measurements, and then picks the faster mode.
TEST(CostPolicyTest, LearnsWhereTheModesCrossAndPredictsStepTimes) {
  auto policy = MakeCostPolicy(/*threshold=*/256, /*min_samples=*/16, /*explore_every=*/16);
  EXPECT_EQ(policy->name(), "cost");
  auto law = [](StepMode mode, int64_t tokens) {
    return mode == StepMode::kSequenceParallel ? 3e-3 + 4e-6 * tokens : 1e-3 + 10e-6 * tokens;
  };
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> noise(0.97, 1.03);
  std::uniform_int_distribution<int64_t> sizes(1, 2000);
  int predicted = 0, explored = 0;
  double worst = 0;
  for (int i = 0; i < 2000; ++i) {
    StepShape step;
    step.num_tokens = sizes(rng);
    step.num_sequences = std::min<int64_t>(step.num_tokens, 8);
    step.attention = step.num_tokens * 64;
    const ShiftDecision d = policy->Decide(step);
    const double seconds = law(d.mode, step.num_tokens) * noise(rng);
    if (d.predicted_seconds >= 0 && i > 200) {
      ++predicted;
      worst = std::max(worst, std::abs(d.predicted_seconds - seconds) / seconds);
    }
    if (d.exploring) {
      ++explored;
      // Only where the slower mode is predicted less than 1.5 times slower:
      // the laws are 1.5 apart at 150 and 875 tokens.
      EXPECT_GT(step.num_tokens, 120) << i;
      EXPECT_LT(step.num_tokens, 950) << i;
    }
    policy->Observe(d, seconds);
  }
  EXPECT_GT(predicted, 1500);
  EXPECT_LT(worst, 0.1) << "predictions should be within the 3% noise plus fit error";
  EXPECT_GT(explored, 25);
  // Far from the crossing, the faster mode wins (unless exploring).
  for (int64_t tokens : {16, 100, 250}) {
    StepShape step{tokens, std::min<int64_t>(tokens, 8), 0, 0, tokens * 64};
    ShiftDecision d = policy->Decide(step);
    if (d.exploring) d = policy->Decide(step);
    EXPECT_EQ(d.mode, StepMode::kTensorParallel) << tokens;
  }
  for (int64_t tokens : {500, 1000, 2000}) {
    StepShape step{tokens, 8, 0, 0, tokens * 64};
    ShiftDecision d = policy->Decide(step);
    if (d.exploring) d = policy->Decide(step);
    EXPECT_EQ(d.mode, StepMode::kSequenceParallel) << tokens;
  }
}

// What a real group shows: most steps are a few decodes whose time barely
// depends on size, a few are large prefills, the law bends where the GEMMs
// stop being memory-bound, noise is multiplicative with a long tail, and the
// machine slows down halfway (another process takes a core). Predictions must
// stay close in relative terms for the small steps as well as the large.
TEST(CostPolicyTest, PredictsSmallAndLargeStepsUnderDriftAndNoise) {
  auto policy = MakeCostPolicy(/*threshold=*/256, /*min_samples=*/16, /*explore_every=*/16);
  auto law = [](StepMode mode, int64_t tokens) {
    const double base = mode == StepMode::kSequenceParallel ? 2.5e-3 : 2e-3;
    const double per_token = mode == StepMode::kSequenceParallel ? 6e-6 : 8e-6;
    return tokens <= 64 ? base + 20e-6 * tokens : base + 1.3e-3 + per_token * tokens;
  };
  std::mt19937 rng(11);
  std::lognormal_distribution<double> noise(0.0, 0.05);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<double> small_errors, large_errors;
  for (int i = 0; i < 4000; ++i) {
    StepShape step;
    const bool large = unit(rng) < 0.1;
    step.num_tokens = large ? 200 + static_cast<int64_t>(1800 * unit(rng))
                            : 1 + static_cast<int64_t>(8 * unit(rng));
    step.num_sequences = large ? 1 + step.num_tokens / 400 : step.num_tokens;
    step.num_decodes = large ? 0 : step.num_tokens;
    step.attention = step.num_tokens * 300;
    const ShiftDecision d = policy->Decide(step);
    const double slowdown = i < 2000 ? 1.0 : 1.5;
    const double seconds = law(d.mode, step.num_tokens) * slowdown * noise(rng);
    if (d.predicted_seconds >= 0 && (i > 400 && (i < 2000 || i > 2400))) {
      (large ? large_errors : small_errors)
          .push_back(std::abs(d.predicted_seconds - seconds) / seconds);
    }
    policy->Observe(d, seconds);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  ASSERT_GT(small_errors.size(), 2000u);
  ASSERT_GT(large_errors.size(), 200u);
  EXPECT_LT(median(small_errors), 0.1);
  EXPECT_LT(median(large_errors), 0.1);
}

TEST(CostPolicyTest, DecidesByThresholdUntilBothModesAreMeasured) {
  auto policy = MakeCostPolicy(/*threshold=*/256, /*min_samples=*/16, /*explore_every=*/16);
  int tp = 0, sp = 0;
  for (int i = 0; i < 12; ++i) {
    StepShape step{10, 1, 1, 10, 10};
    const ShiftDecision d = policy->Decide(step);
    EXPECT_LT(d.predicted_seconds, 0);
    (d.mode == StepMode::kSequenceParallel ? sp : tp)++;
    policy->Observe(d, 0.001);
  }
  // Mostly the threshold's TP, with some SP steps to learn that mode too.
  EXPECT_GT(tp, sp);
  EXPECT_GT(sp, 0);
  EXPECT_TRUE(MakeShiftPolicy("cost", 256).ok());
}

}  // namespace
}  // namespace shift
