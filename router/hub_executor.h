// The router's step executor: runs a planned step on one worker group
// through the worker hub (the plan goes to every rank over its control
// stream; the leader's sampled tokens and every rank's timings come back).
#pragma once

#include <cstdint>
#include <deque>

#include "absl/time/time.h"
#include "core/step_executor.h"
#include "router/worker_hub.h"

namespace shift {

class HubExecutor final : public StepExecutor {
 public:
  // `hub` must outlive the executor.
  HubExecutor(WorkerHub* hub, uint32_t group, absl::Duration step_timeout)
      : hub_(hub), group_(group), step_timeout_(step_timeout) {}

  absl::StatusOr<ExecutedStep> Execute(const SchedulerOutput& step, StepMode mode,
                                       absl::Span<const uint64_t> released) override;
  // The plan goes to the ranks at once; they run it after the step before.
  absl::Status Start(const SchedulerOutput& step, StepMode mode,
                     absl::Span<const uint64_t> released) override;
  absl::StatusOr<ExecutedStep> Wait() override;
  void Abandon() override;

 private:
  WorkerHub* hub_;
  uint32_t group_;
  absl::Duration step_timeout_;
  std::deque<absl::Time> started_;  // when each started step's plan was sent
};

}  // namespace shift
