// The latency-target flags shift-router, shift-generate and shift-sim share
// (--tpot_slo_ms, --ttft_slo_ms; docs/architecture.md, Steps sized to a
// latency target).
#pragma once

#include "absl/status/statusor.h"

namespace shift {

struct LatencyTargetFlagValues {
  double tpot_ms = 0;  // 0: none
  double ttft_ms = 0;  // 0: none
};

// The flags' values, each checked by ValidateLatencyTarget.
absl::StatusOr<LatencyTargetFlagValues> LatencyTargetFlags();

}  // namespace shift
