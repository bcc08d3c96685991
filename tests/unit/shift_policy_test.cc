// The shift policies: the threshold policy picks SP exactly above its token
// threshold, fixed policies never change, every decision carries its inputs,
// and policies are made by name.
#include "router/shift_policy.h"

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
    EXPECT_EQ(d.mode, v1::MODE_TP) << tokens;
    ExpectSameShape(d.inputs, Shape(tokens));
  }
  for (int64_t tokens : {int64_t{101}, int64_t{102}, int64_t{4096}, int64_t{1} << 40}) {
    const ShiftDecision d = policy->Decide(Shape(tokens));
    EXPECT_EQ(d.mode, v1::MODE_SP) << tokens;
    ExpectSameShape(d.inputs, Shape(tokens));
  }
}

TEST(ShiftPolicyTest, ThresholdLooksOnlyAtTokens) {
  auto policy = MakeThresholdPolicy(10);
  // Many sequences or a long context do not change the decision.
  EXPECT_EQ(policy->Decide(Shape(10, 1000, 1000, 1 << 20)).mode, v1::MODE_TP);
  EXPECT_EQ(policy->Decide(Shape(11, 1, 0, 1)).mode, v1::MODE_SP);
  // Threshold zero: any non-empty step is SP.
  auto zero = MakeThresholdPolicy(0);
  EXPECT_EQ(zero->Decide(Shape(0)).mode, v1::MODE_TP);
  EXPECT_EQ(zero->Decide(Shape(1)).mode, v1::MODE_SP);
}

TEST(ShiftPolicyTest, FixedPoliciesNeverChange) {
  auto tp = MakeFixedPolicy(v1::MODE_TP);
  auto sp = MakeFixedPolicy(v1::MODE_SP);
  ASSERT_NE(tp, nullptr);
  ASSERT_NE(sp, nullptr);
  EXPECT_EQ(tp->name(), "tp");
  EXPECT_EQ(sp->name(), "sp");
  for (int64_t tokens : {0, 1, 100, 1000000}) {
    const ShiftDecision a = tp->Decide(Shape(tokens));
    const ShiftDecision b = sp->Decide(Shape(tokens));
    EXPECT_EQ(a.mode, v1::MODE_TP) << tokens;
    EXPECT_EQ(b.mode, v1::MODE_SP) << tokens;
    ExpectSameShape(a.inputs, Shape(tokens));
    ExpectSameShape(b.inputs, Shape(tokens));
  }
}

TEST(ShiftPolicyTest, MakeByName) {
  auto threshold = MakeShiftPolicy("threshold", 5);
  ASSERT_TRUE(threshold.ok()) << threshold.status();
  EXPECT_EQ((*threshold)->name(), "threshold");
  EXPECT_EQ((*threshold)->Decide(Shape(5)).mode, v1::MODE_TP);
  EXPECT_EQ((*threshold)->Decide(Shape(6)).mode, v1::MODE_SP);

  auto tp = MakeShiftPolicy("tp", 5);
  ASSERT_TRUE(tp.ok()) << tp.status();
  EXPECT_EQ((*tp)->name(), "tp");
  EXPECT_EQ((*tp)->Decide(Shape(1000)).mode, v1::MODE_TP);

  auto sp = MakeShiftPolicy("sp", 5);
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ((*sp)->name(), "sp");
  EXPECT_EQ((*sp)->Decide(Shape(1)).mode, v1::MODE_SP);
}

TEST(ShiftPolicyTest, UnknownNameIsInvalidArgument) {
  for (const char* name : {"", "bogus", "TP", "Threshold", "sp "}) {
    auto policy = MakeShiftPolicy(name, 5);
    EXPECT_FALSE(policy.ok()) << name;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

}  // namespace
}  // namespace shift
