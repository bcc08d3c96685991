// A step's prefill budget sized to a latency target (--tpot_slo_ms): the
// step's decodes run first, as always; the planner chooses how many prefill
// tokens may follow them, and in which mode, so that the predicted step
// time keeps every running decode within its time-per-output-token target,
// and among the budgets that do, the largest (the most prefill work). A
// pure function of the step's preview and a predictor; the step loop owns
// its state (docs/architecture.md, Steps sized to a latency target).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/step_mode.h"
#include "core/shift_policy.h"

namespace shift {

// Why a step's prefill budget is what it is.
enum class BudgetReason {
  kCap,          // the fixed cap (--max_num_batched_tokens) or all there is
  kTarget,       // the largest prefill the target allows
  kTargetUnmet,  // decodes alone are predicted over the target: no prefill
  kStarvation,   // a prefill waited too long: it gets a chunk anyway
  kUnpredicted,  // the cost model cannot predict yet: the fixed cap
  kTtft,         // a prompt would miss its time-to-first-token target: more
};
const char* BudgetReasonName(BudgetReason reason);

// A prefill that may follow the decodes, in the scheduler's order: its first
// position and the tokens it has left to compute.
struct PrefillCandidate {
  int64_t start_position = 0;
  int64_t tokens = 0;
  // Seconds left until its time-to-first-token target (< 0: missed by
  // that much); infinite with no target or after its first token.
  double ttft_left = std::numeric_limits<double>::infinity();
};

struct BudgetQuestion {
  StepShape decodes;                       // the step without prefill
  std::vector<PrefillCandidate> prefills;  // what may follow, in order
  int64_t max_tokens = 0;                  // the cap, the whole step
  int64_t max_sequences = 0;               // sequences per step
  // The predicted step time allowed (the target less the decodes' waits,
  // less the margin); infinite with no decodes running.
  double seconds = std::numeric_limits<double>::infinity();
  // The starvation guard: at least this many prefill tokens (0: none).
  int64_t min_prefill = 0;
};

struct BudgetChoice {
  int64_t prefill_tokens = 0;  // the most prefill tokens the step may take
  BudgetReason reason = BudgetReason::kCap;
  StepMode mode = StepMode::kTensorParallel;  // the mode it was sized for
  double predicted_seconds = -1;              // in that mode (< 0: none)
  // The tightest target of the step's decodes (seconds; 0: none decodes).
  double target_seconds = 0;
};

// The mode a policy would run `step` in and its predicted seconds; nullopt
// when no candidate mode can be predicted.
using ModePredictor = std::function<std::optional<std::pair<StepMode, double>>(const StepShape&)>;

// The shape of `q`'s decodes followed by `prefill` tokens of its prefills,
// filled in order as the scheduler fills them.
StepShape ShapeWithPrefill(const BudgetQuestion& q, int64_t prefill);

BudgetChoice ChooseBudget(const BudgetQuestion& q, const ModePredictor& predict);

// A latency target (--tpot_slo_ms or a request's tpot_slo_ms, and
// --ttft_slo_ms): 0 (none) or within [kMinTargetMs, kMaxTargetMs];
// INVALID_ARGUMENT naming `what` otherwise.
inline constexpr double kMinTargetMs = 0.1;
inline constexpr double kMaxTargetMs = 600000;
absl::Status ValidateLatencyTarget(double milliseconds, absl::string_view what);

}  // namespace shift
