// A scheduler step as the ranks receive it: the StepPlan message, with the
// sequences the ranks must forget first, each sequence as a diff against
// what the ranks hold, and sampling parameters for sequences new to them.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "common/step_mode.h"
#include "core/scheduler.h"
#include "shift/v1/internal.pb.h"

namespace shift {

// The mode as the wire carries it.
inline v1::Mode ToProto(StepMode mode) {
  return mode == StepMode::kSequenceParallel ? v1::MODE_SP : v1::MODE_TP;
}

v1::internal::StepPlan BuildStepPlan(const SchedulerOutput& out, StepMode mode,
                                     absl::Span<const uint64_t> released_seq_ids);

}  // namespace shift
