#include "router/shift_policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

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

// Ridge-regularised least squares over a few features, updated one sample
// at a time through the normal equations (small enough to solve per step).
class LinearModel {
 public:
  static constexpr int kFeatures = 4;
  using Features = std::array<double, kFeatures>;

  void Add(const Features& x, double y) {
    for (int i = 0; i < kFeatures; ++i) {
      for (int j = 0; j < kFeatures; ++j) xtx_[i][j] += x[i] * x[j];
      xty_[i] += x[i] * y;
    }
    ++samples_;
  }
  int samples() const { return samples_; }
  double Predict(const Features& x) const {
    // Solve (XᵀX + λI) w = Xᵀy by Gaussian elimination with partial pivoting.
    double a[kFeatures][kFeatures + 1];
    for (int i = 0; i < kFeatures; ++i) {
      // A light ridge keeps collinear features (all decodes: tokens ==
      // sequences) solvable.
      for (int j = 0; j < kFeatures; ++j) a[i][j] = xtx_[i][j] + (i == j ? 1e-6 * (1 + samples_) : 0.0);
      a[i][kFeatures] = xty_[i];
    }
    for (int c = 0; c < kFeatures; ++c) {
      int pivot = c;
      for (int r = c + 1; r < kFeatures; ++r) {
        if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
      }
      std::swap(a[c], a[pivot]);
      if (std::abs(a[c][c]) < 1e-30) continue;
      for (int r = 0; r < kFeatures; ++r) {
        if (r == c) continue;
        const double f = a[r][c] / a[c][c];
        for (int k = c; k <= kFeatures; ++k) a[r][k] -= f * a[c][k];
      }
    }
    double y = 0;
    for (int i = 0; i < kFeatures; ++i) {
      if (std::abs(a[i][i]) >= 1e-30) y += a[i][kFeatures] / a[i][i] * x[i];
    }
    return std::max(y, 0.0);
  }

 private:
  double xtx_[kFeatures][kFeatures] = {};
  double xty_[kFeatures] = {};
  int samples_ = 0;
};

class CostPolicy final : public ShiftPolicy {
 public:
  CostPolicy(int64_t threshold, int min_samples, int explore_every)
      : threshold_(threshold), min_samples_(min_samples), explore_every_(explore_every) {}
  const std::string& name() const override { return name_; }

  ShiftDecision Decide(const StepShape& step) override {
    ShiftDecision d;
    d.inputs = step;
    const LinearModel::Features x = FeaturesOf(step);
    if (!fitted()) {
      // Threshold until fitted, but make sure both modes get samples.
      d.mode = step.num_tokens > threshold_ ? v1::MODE_SP : v1::MODE_TP;
      if (++steps_ % 4 == 0) {
        d.mode = models_[0].samples() <= models_[1].samples() ? v1::MODE_TP : v1::MODE_SP;
      }
      return d;
    }
    const double tp = models_[0].Predict(x), sp = models_[1].Predict(x);
    d.mode = sp < tp ? v1::MODE_SP : v1::MODE_TP;
    if (explore_every_ > 0 && ++steps_ % explore_every_ == 0) {
      d.mode = d.mode == v1::MODE_SP ? v1::MODE_TP : v1::MODE_SP;
      d.exploring = true;
    }
    d.predicted_seconds = d.mode == v1::MODE_SP ? sp : tp;
    return d;
  }

  void Observe(const ShiftDecision& decision, double seconds) override {
    models_[decision.mode == v1::MODE_SP ? 1 : 0].Add(FeaturesOf(decision.inputs), seconds);
  }

 private:
  bool fitted() const {
    return models_[0].samples() >= min_samples_ && models_[1].samples() >= min_samples_;
  }
  static LinearModel::Features FeaturesOf(const StepShape& s) {
    // Scaled so the normal equations stay well conditioned.
    return {1.0, s.num_tokens / 1e3, s.num_sequences / 1e2, s.attention / 1e6};
  }

  const std::string name_ = "cost";
  int64_t threshold_;
  int min_samples_, explore_every_;
  LinearModel models_[2];  // TP, SP
  uint64_t steps_ = 0;
};

}  // namespace

std::unique_ptr<ShiftPolicy> MakeCostPolicy(int64_t threshold, int min_samples,
                                            int explore_every) {
  return std::make_unique<CostPolicy>(threshold, min_samples, explore_every);
}

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
  if (name == "cost") {
    if (threshold < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shift_threshold must be >= 0, got ", threshold));
    }
    return MakeCostPolicy(threshold);
  }
  if (name == "tp") return MakeFixedPolicy(v1::MODE_TP);
  if (name == "sp") return MakeFixedPolicy(v1::MODE_SP);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown shift policy \"", name, "\": use threshold, cost, tp or sp"));
}

}  // namespace shift
