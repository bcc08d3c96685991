// A scheduler step as the ranks receive it: the StepPlan message, with the
// sequences the ranks must forget first, each sequence as a diff against
// what the ranks hold, and sampling parameters for sequences new to them.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "router/scheduler.h"
#include "shift/v1/internal.pb.h"

namespace shift {

v1::internal::StepPlan BuildStepPlan(const SchedulerOutput& out, v1::Mode mode,
                                     absl::Span<const uint64_t> released_seq_ids);

}  // namespace shift
