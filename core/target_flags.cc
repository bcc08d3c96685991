#include "core/target_flags.h"

#include "absl/flags/flag.h"
#include "common/status.h"
#include "core/step_budget.h"

ABSL_FLAG(double, tpot_slo_ms, 0,
          "A time-per-output-token target in milliseconds: each step's prefill tokens are the "
          "most that keep every running decode within it, as predicted by a cost model learned "
          "from the steps (the fixed --max_num_batched_tokens cap until it predicts); 0: off");
ABSL_FLAG(double, ttft_slo_ms, 0,
          "With --tpot_slo_ms: a time-to-first-token target in milliseconds: a step takes more "
          "prefill than the time-per-output-token target allows when a prompt would otherwise "
          "miss this one, as predicted; 0: off");

namespace shift {

absl::StatusOr<LatencyTargetFlagValues> LatencyTargetFlags() {
  LatencyTargetFlagValues v;
  v.tpot_ms = absl::GetFlag(FLAGS_tpot_slo_ms);
  v.ttft_ms = absl::GetFlag(FLAGS_ttft_slo_ms);
  SHIFT_RETURN_IF_ERROR(ValidateLatencyTarget(v.tpot_ms, "--tpot_slo_ms"));
  SHIFT_RETURN_IF_ERROR(ValidateLatencyTarget(v.ttft_ms, "--ttft_slo_ms"));
  return v;
}

}  // namespace shift
