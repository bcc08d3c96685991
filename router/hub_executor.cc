#include "router/hub_executor.h"

#include <algorithm>
#include <utility>

#include "common/status.h"
#include "router/step_plan.h"

namespace shift {

namespace rpc = v1::internal;

absl::StatusOr<ExecutedStep> HubExecutor::Execute(const SchedulerOutput& step, StepMode mode,
                                                  absl::Span<const uint64_t> released) {
  SHIFT_RETURN_IF_ERROR(Start(step, mode, released));
  return Wait();
}

absl::Status HubExecutor::Start(const SchedulerOutput& step, StepMode mode,
                                absl::Span<const uint64_t> released) {
  // The step's time runs from here, sending the plan included, to its last
  // result: what a client waits for.
  const absl::Time started = absl::Now();
  SHIFT_RETURN_IF_ERROR(hub_->StartStep(group_, BuildStepPlan(step, mode, released)));
  started_.push_back(started);
  return absl::OkStatus();
}

void HubExecutor::Abandon() {
  started_.clear();
  hub_->AbandonSteps(group_);
}

absl::StatusOr<ExecutedStep> HubExecutor::Wait() {
  if (started_.empty()) return absl::FailedPreconditionError("no step was started");
  ExecutedStep executed;
  executed.started = started_.front();
  started_.pop_front();
  absl::StatusOr<WorkerHub::StepOutcome> outcome = hub_->WaitStep(group_, step_timeout_);
  if (!outcome.ok()) {
    started_.clear();  // the hub voided the other started step too
    return outcome.status();
  }
  executed.completed = outcome->completed;
  for (const rpc::StepResult& r : outcome->results) {
    executed.rank_seconds =
        std::max(executed.rank_seconds, r.timings().compute_seconds() + r.timings().comm_seconds());
  }
  rpc::StepResult& leader = outcome->results[0];
  executed.sampled.reserve(leader.sampled_size());
  for (rpc::SampledToken& t : *leader.mutable_sampled()) {
    SampledToken token{t.seq_id(), t.token_id(), t.logprob(), {}};
    for (const v1::TopLogprob& alt : t.top()) token.top.emplace_back(alt.token_id(), alt.logprob());
    executed.sampled.push_back(std::move(token));
  }
  return executed;
}

}  // namespace shift
