#include "router/shift_policy.h"

#include "absl/strings/str_cat.h"

namespace shift {
namespace {

class ThresholdPolicy final : public ShiftPolicy {
 public:
  explicit ThresholdPolicy(int64_t threshold) : threshold_(threshold) {}
  const std::string& name() const override { return name_; }
  ShiftDecision Decide(const StepShape& step) override {
    return {step.num_tokens > threshold_ ? v1::MODE_SP : v1::MODE_TP, step};
  }

 private:
  const std::string name_ = "threshold";
  int64_t threshold_;
};

class FixedPolicy final : public ShiftPolicy {
 public:
  explicit FixedPolicy(v1::Mode mode) : mode_(mode), name_(mode == v1::MODE_SP ? "sp" : "tp") {}
  const std::string& name() const override { return name_; }
  ShiftDecision Decide(const StepShape& step) override { return {mode_, step}; }

 private:
  v1::Mode mode_;
  std::string name_;
};

}  // namespace

std::unique_ptr<ShiftPolicy> MakeThresholdPolicy(int64_t threshold) {
  return std::make_unique<ThresholdPolicy>(threshold);
}

std::unique_ptr<ShiftPolicy> MakeFixedPolicy(v1::Mode mode) {
  return std::make_unique<FixedPolicy>(mode);
}

absl::StatusOr<std::unique_ptr<ShiftPolicy>> MakeShiftPolicy(const std::string& name,
                                                             int64_t threshold) {
  if (name == "threshold") {
    if (threshold < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shift_threshold must be >= 0, got ", threshold));
    }
    return MakeThresholdPolicy(threshold);
  }
  if (name == "tp") return MakeFixedPolicy(v1::MODE_TP);
  if (name == "sp") return MakeFixedPolicy(v1::MODE_SP);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown shift policy \"", name, "\": use threshold, tp or sp"));
}

}  // namespace shift
