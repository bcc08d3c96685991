#include "core/shift_policy.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/step_cost.h"

namespace shift {
namespace {

class ThresholdPolicy final : public ShiftPolicy {
 public:
  explicit ThresholdPolicy(int64_t threshold) : threshold_(threshold) {}
  const std::string& name() const override { return name_; }
  ShiftDecision Decide(const StepShape& step) override { return {ModeOf(step), step}; }
  std::vector<StepMode> CandidateModes(const StepShape& step) override { return {ModeOf(step)}; }

 private:
  StepMode ModeOf(const StepShape& step) const {
    return step.num_tokens > threshold_ ? StepMode::kSequenceParallel : StepMode::kTensorParallel;
  }
  const std::string name_ = "threshold";
  int64_t threshold_;
};

class FixedPolicy final : public ShiftPolicy {
 public:
  explicit FixedPolicy(StepMode mode) : mode_(mode), name_(StepModeName(mode)) {}
  const std::string& name() const override { return name_; }
  ShiftDecision Decide(const StepShape& step) override { return {mode_, step}; }
  std::vector<StepMode> CandidateModes(const StepShape&) override { return {mode_}; }

 private:
  StepMode mode_;
  std::string name_;
};

class CostPolicy final : public ShiftPolicy {
 public:
  CostPolicy(int64_t threshold, int min_samples, int explore_every)
      : threshold_(threshold), min_samples_(min_samples), explore_every_(explore_every) {}
  const std::string& name() const override { return name_; }

  ShiftDecision Decide(const StepShape& step) override {
    ShiftDecision d;
    d.inputs = step;
    if (!fitted()) {
      // Threshold until fitted, but make sure both modes get samples.
      d.mode =
          step.num_tokens > threshold_ ? StepMode::kSequenceParallel : StepMode::kTensorParallel;
      if (++steps_ % 4 == 0) {
        d.mode = models_[0].samples() <= models_[1].samples() ? StepMode::kTensorParallel
                                                              : StepMode::kSequenceParallel;
      }
      return d;
    }
    const double tp = models_[0].Predict(step), sp = models_[1].Predict(step);
    d.mode = sp < tp ? StepMode::kSequenceParallel : StepMode::kTensorParallel;
    // Explore only where the other mode might plausibly be faster: running a
    // step predicted at twice the time to confirm it is slow costs more than
    // it teaches (the law still learns from every other step).
    const double ratio = std::max(tp, sp) / std::max(std::min(tp, sp), 1e-9);
    if (explore_every_ > 0 && ++steps_ % explore_every_ == 0 && ratio < kMaxExploreRatio) {
      d.mode = d.mode == StepMode::kSequenceParallel ? StepMode::kTensorParallel
                                                     : StepMode::kSequenceParallel;
      d.exploring = true;
    }
    d.predicted_seconds = d.mode == StepMode::kSequenceParallel ? sp : tp;
    return d;
  }

  void Observe(const ShiftDecision& decision, double seconds) override {
    models_[decision.mode == StepMode::kSequenceParallel ? 1 : 0].Add(decision.inputs, seconds);
  }
  std::vector<StepMode> CandidateModes(const StepShape& step) override {
    if (!fitted()) {
      return {step.num_tokens > threshold_ ? StepMode::kSequenceParallel
                                           : StepMode::kTensorParallel};
    }
    return {StepMode::kTensorParallel, StepMode::kSequenceParallel};
  }

 private:
  bool fitted() const {
    return models_[0].samples() >= min_samples_ && models_[1].samples() >= min_samples_;
  }
  static constexpr double kMaxExploreRatio = 1.5;
  const std::string name_ = "cost";
  int64_t threshold_;
  int min_samples_, explore_every_;
  StepTimeModel models_[2];  // TP, SP
  uint64_t steps_ = 0;
};

}  // namespace

std::unique_ptr<ShiftPolicy> MakeCostPolicy(int64_t threshold, int min_samples, int explore_every) {
  return std::make_unique<CostPolicy>(threshold, min_samples, explore_every);
}

std::unique_ptr<ShiftPolicy> MakeThresholdPolicy(int64_t threshold) {
  return std::make_unique<ThresholdPolicy>(threshold);
}

std::unique_ptr<ShiftPolicy> MakeFixedPolicy(StepMode mode) {
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
  if (name == "cost") {
    if (threshold < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shift_threshold must be >= 0, got ", threshold));
    }
    return MakeCostPolicy(threshold);
  }
  if (name == "tp") return MakeFixedPolicy(StepMode::kTensorParallel);
  if (name == "sp") return MakeFixedPolicy(StepMode::kSequenceParallel);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown shift policy \"", name, "\": use threshold, cost, tp or sp"));
}

}  // namespace shift
