// The shift policy: for each step the scheduler has built, TP or SP
// (docs/architecture.md, Where each decision is made). Policies are small objects behind one
// interface, chosen by --shift-policy; every decision is returned with the
// inputs it was made from, so it can be counted and observed, and every
// step's measured time is fed back (the cost policy learns from it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/step_mode.h"

namespace shift {

// What a policy sees of a step.
struct StepShape {
  int64_t num_tokens = 0;     // scheduled tokens, all sequences
  int64_t num_sequences = 0;  // sequences in the batch
  int64_t num_decodes = 0;    // sequences scheduling one token after a sample
  int64_t max_context = 0;    // longest context (positions) any sequence attends
  int64_t attention = 0;      // sum over sequences of new tokens x context after the step

  // Adds a sequence computing `n` tokens from position `start` (not counted
  // as a decode: the caller knows).
  void AddSequence(int64_t start, int64_t n) {
    num_tokens += n;
    num_sequences += 1;
    attention += n * start + n * (n + 1) / 2;
    max_context = std::max(max_context, start + n);
  }
};

struct ShiftDecision {
  StepMode mode = StepMode::kTensorParallel;
  StepShape inputs;
  // The cost policy's prediction of the step's seconds in `mode` (< 0: none).
  double predicted_seconds = -1;
  // The other mode was chosen to keep learning its cost, not because it is
  // predicted faster.
  bool exploring = false;
};

class ShiftPolicy {
 public:
  virtual ~ShiftPolicy() = default;
  virtual const std::string& name() const = 0;
  virtual ShiftDecision Decide(const StepShape& step) = 0;
  // The step `decision` was made for took `seconds` (plan sent to the last
  // result).
  virtual void Observe(const ShiftDecision& decision, double seconds) {}
  // The modes Decide may pick for `step`, exploring aside: what a step's
  // budget is sized for (core/step_budget.h). By default the mode Decide
  // gives (a policy whose Decide changes its state overrides this); the
  // cost policy, which picks the faster once fitted, either.
  virtual std::vector<StepMode> CandidateModes(const StepShape& step) {
    return {Decide(step).mode};
  }
};

// SP when the step schedules more than `threshold` tokens, else TP.
std::unique_ptr<ShiftPolicy> MakeThresholdPolicy(int64_t threshold);
// Always `mode` (baselines and benchmarks); named "tp" or "sp".
std::unique_ptr<ShiftPolicy> MakeFixedPolicy(StepMode mode);
// Predicts each mode's step time from measured step times, online: a law
// over (1, tokens, sequences, attention) fitted by relative least squares,
// corrected per shape bucket by the median ratio of its recent measurements
// to the law; picks the cheaper. Until both modes have `min_samples` observations it
// decides as the threshold policy; afterwards one step in `explore_every`
// runs the mode it did not pick, when that mode is predicted less than 1.5
// times slower, so both models keep seeing every step size.
std::unique_ptr<ShiftPolicy> MakeCostPolicy(int64_t threshold, int min_samples = 16,
                                            int explore_every = 16);
// By name: "threshold", "cost", "tp" or "sp"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::unique_ptr<ShiftPolicy>> MakeShiftPolicy(const std::string& name,
                                                             int64_t threshold);

}  // namespace shift
