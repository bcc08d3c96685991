// The shift policy: for each step the scheduler has built, TP or SP
// (DESIGN.md, The shift policy). Policies are small objects behind one
// interface, chosen by --shift-policy; every decision is returned with the
// inputs it was made from, so it can be counted and observed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "shift/v1/generation.pb.h"

namespace shift {

// What a policy sees of a step.
struct StepShape {
  int64_t num_tokens = 0;      // scheduled tokens, all sequences
  int64_t num_sequences = 0;   // sequences in the batch
  int64_t num_decodes = 0;     // sequences scheduling one token after a sample
  int64_t max_context = 0;     // longest context (positions) any sequence attends
};

struct ShiftDecision {
  v1::Mode mode = v1::MODE_TP;
  StepShape inputs;
};

class ShiftPolicy {
 public:
  virtual ~ShiftPolicy() = default;
  virtual const std::string& name() const = 0;
  virtual ShiftDecision Decide(const StepShape& step) = 0;
};

// SP when the step schedules more than `threshold` tokens, else TP.
std::unique_ptr<ShiftPolicy> MakeThresholdPolicy(int64_t threshold);
// Always `mode` (baselines and benchmarks); named "tp" or "sp".
std::unique_ptr<ShiftPolicy> MakeFixedPolicy(v1::Mode mode);
// By name: "threshold", "tp" or "sp"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::unique_ptr<ShiftPolicy>> MakeShiftPolicy(const std::string& name,
                                                             int64_t threshold);

}  // namespace shift
