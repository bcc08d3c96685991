// What runs a step: the one thing the step loop does not know how to do.
// The router's executor sends the plan to a worker group over its control
// streams; shift-generate's runs an engine in process; a simulator's would
// price the step with a cost model on a virtual clock.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/step_mode.h"
#include "core/scheduler.h"

namespace shift {

struct ExecutedStep {
  // The leader's tokens: one per sequence with `sample`, in step order.
  std::vector<SampledToken> sampled;
  // When the step started (the plan was sent) and ended (its last result
  // came in), on the executor's clock: the step's measured time.
  absl::Time started;
  absl::Time completed;
  // The slowest rank's own compute and collectives (0: not measured).
  double rank_seconds = 0;
};

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  // Runs `step` in `mode`, after the ranks forget `released`. UNAVAILABLE:
  // the group lost a rank and is out of service; any other error: the step
  // failed and the ranks dropped every sequence (the group re-forms).
  virtual absl::StatusOr<ExecutedStep> Execute(const SchedulerOutput& step, StepMode mode,
                                               absl::Span<const uint64_t> released) = 0;

  // Planning ahead (StepLoop's plan_ahead): Start hands a step over, and
  // Wait returns the result of the oldest step started and not waited for;
  // at most two are (the running step and the one planned ahead of its
  // results), waited for in the order they started. Abandon drops every
  // started step not waited for (after a failed step). By default Start
  // runs the step at once (Execute) and Wait returns what it gave: right,
  // with no overlap; an executor whose ranks run a step while the next is
  // planned (the router's) overrides them.
  virtual absl::Status Start(const SchedulerOutput& step, StepMode mode,
                             absl::Span<const uint64_t> released) {
    absl::StatusOr<ExecutedStep> executed = Execute(step, mode, released);
    Started started;
    if (executed.ok()) {
      started.step = *std::move(executed);
    } else {
      started.status = executed.status();
    }
    started_.push_back(std::move(started));
    return absl::OkStatus();
  }
  virtual absl::StatusOr<ExecutedStep> Wait() {
    if (started_.empty()) return absl::FailedPreconditionError("no step was started");
    Started started = std::move(started_.front());
    started_.pop_front();
    if (!started.status.ok()) return started.status;
    return std::move(started.step);
  }
  virtual void Abandon() { started_.clear(); }

 private:
  struct Started {
    absl::Status status;
    ExecutedStep step;
  };
  std::deque<Started> started_;
};

}  // namespace shift
