// Step times learned online, per mode: what the cost policy picks a mode
// by (core/shift_policy.h) and what the step budget is sized by
// (core/step_budget.h). Each finished step's shape and measured seconds are
// added; a prediction is a law fitted over every step, corrected by the
// recent measurements of steps of about the same shape.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <deque>
#include <map>
#include <vector>

#include "common/step_mode.h"
#include "core/shift_policy.h"

namespace shift {

// Weighted least squares over a few features with a light ridge, updated
// one sample at a time through the normal equations (small enough to solve
// per step).
class LinearModel {
 public:
  static constexpr int kFeatures = 4;
  using Features = std::array<double, kFeatures>;

  void Add(const Features& x, double y, double weight) {
    for (int i = 0; i < kFeatures; ++i) {
      for (int j = 0; j < kFeatures; ++j) xtx_[i][j] += weight * x[i] * x[j];
      xty_[i] += weight * x[i] * y;
    }
    ++samples_;
    Solve();
  }
  int samples() const { return samples_; }
  double Predict(const Features& x) const {
    double y = 0;
    for (int i = 0; i < kFeatures; ++i) y += coefficients_[i] * x[i];
    return y;
  }

 private:
  // Solves (XᵀWX + λI) w = XᵀWy by Gauss-Jordan elimination with partial
  // pivoting, once per sample rather than per prediction. x[0] is 1, so
  // xtx_[0][0] is the total weight: a ridge relative to it keeps collinear
  // features (all decodes: tokens == sequences) solvable whatever the
  // weights' scale. It must stay tiny: a feature that only the few large,
  // light-weighted steps vary (tokens apart from sequences) would otherwise
  // be shrunk, and large steps predicted short.
  void Solve() {
    const double ridge = 1e-12 * xtx_[0][0];
    double a[kFeatures][kFeatures + 1];
    for (int i = 0; i < kFeatures; ++i) {
      for (int j = 0; j < kFeatures; ++j) a[i][j] = xtx_[i][j] + (i == j ? ridge : 0.0);
      a[i][kFeatures] = xty_[i];
    }
    for (int c = 0; c < kFeatures; ++c) {
      int pivot = c;
      for (int r = c + 1; r < kFeatures; ++r) {
        if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
      }
      std::swap(a[c], a[pivot]);
      if (std::abs(a[c][c]) < 1e-300) continue;
      for (int r = 0; r < kFeatures; ++r) {
        if (r == c) continue;
        const double f = a[r][c] / a[c][c];
        for (int k = c; k <= kFeatures; ++k) a[r][k] -= f * a[c][k];
      }
    }
    for (int i = 0; i < kFeatures; ++i) {
      coefficients_[i] = std::abs(a[i][i]) >= 1e-300 ? a[i][kFeatures] / a[i][i] : 0.0;
    }
  }

  double xtx_[kFeatures][kFeatures] = {};
  double xty_[kFeatures] = {};
  Features coefficients_ = {};
  int samples_ = 0;
};

// One mode's step time. Two parts:
// - a law over (1, tokens, sequences, attention) fitted by relative least
//   squares (each sample weighted by 1/seconds², so a 3 ms decode counts
//   as much as a 300 ms prefill: plain least squares fits the large steps
//   and misses the many small ones by half);
// - a correction per shape bucket (half-octaves of tokens and sequences,
//   octaves of attention): the median of the last kWindow ratios of
//   measured to law there. It follows what a linear law cannot (GEMMs
//   that change regime with size) and how fast the machine is right now
//   (other processes, clocks), which moves a shape's time by tens of percent
//   over a run on a shared host.
class StepTimeModel {
 public:
  static constexpr size_t kWindow = 8;

  int samples() const { return law_.samples(); }

  void Add(const StepShape& step, double seconds) {
    if (seconds <= 0) return;
    if (law_.samples() >= kLawSamples) {
      const double law = Law(step);
      if (law > 0) {
        std::deque<double>& ratios = ratios_[BucketOf(step)];
        ratios.push_back(seconds / law);
        if (ratios.size() > kWindow) ratios.pop_front();
      }
    }
    law_.Add(FeaturesOf(step), seconds, 1.0 / (seconds * seconds));
  }

  // Seconds; < 0 before any sample.
  double Predict(const StepShape& step) const {
    if (law_.samples() == 0) return -1;
    const double law = Law(step);
    auto it = ratios_.find(BucketOf(step));
    if (it == ratios_.end() || it->second.size() < kMinRatios) return law;
    std::vector<double> ratios(it->second.begin(), it->second.end());
    std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
    return law * ratios[ratios.size() / 2];
  }

 private:
  static constexpr int kLawSamples = 8;
  static constexpr size_t kMinRatios = 3;
  using Bucket = std::array<int, 3>;

  double Law(const StepShape& step) const {
    // Never zero or negative: a time is positive, and ratios divide by it.
    return std::max(law_.Predict(FeaturesOf(step)), 1e-6);
  }
  static LinearModel::Features FeaturesOf(const StepShape& s) {
    // Scaled so the normal equations stay well conditioned.
    return {1.0, s.num_tokens / 1e3, s.num_sequences / 1e2, s.attention / 1e6};
  }
  static int HalfOctave(int64_t v) {
    return static_cast<int>(
        std::lround(2 * std::log2(static_cast<double>(std::max<int64_t>(v, 1)))));
  }
  static Bucket BucketOf(const StepShape& s) {
    // Finite: about 32 x 32 x 45 buckets at most, a few hundred in practice.
    return {HalfOctave(s.num_tokens), HalfOctave(s.num_sequences), HalfOctave(s.attention + 1) / 2};
  }

  LinearModel law_;
  std::map<Bucket, std::deque<double>> ratios_;
};

// A StepTimeModel per mode.
class StepCostModel {
 public:
  void Add(StepMode mode, const StepShape& step, double seconds) {
    models_[Index(mode)].Add(step, seconds);
  }
  // Seconds of `step` in `mode`; < 0 before `min_samples` steps of that mode.
  double Predict(const StepShape& step, StepMode mode, int min_samples) const {
    const StepTimeModel& m = models_[Index(mode)];
    return m.samples() >= min_samples ? m.Predict(step) : -1;
  }
  int samples(StepMode mode) const { return models_[Index(mode)].samples(); }

 private:
  static int Index(StepMode mode) { return mode == StepMode::kSequenceParallel ? 1 : 0; }
  StepTimeModel models_[2];  // TP, SP
};

}  // namespace shift
