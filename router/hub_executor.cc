#include "router/hub_executor.h"

#include <algorithm>
#include <utility>

#include "common/status.h"
#include "router/step_plan.h"

namespace shift {

namespace rpc = v1::internal;

absl::StatusOr<ExecutedStep> HubExecutor::Execute(const SchedulerOutput& step, StepMode mode,
                                                  absl::Span<const uint64_t> released) {
  ExecutedStep executed;
  // The step's time runs from here, sending the plan included, to its last
  // result: what a client waits for.
  executed.started = absl::Now();
  SHIFT_RETURN_IF_ERROR(hub_->StartStep(group_, BuildStepPlan(step, mode, released)));
  SHIFT_ASSIGN_OR_RETURN(WorkerHub::StepOutcome outcome, hub_->WaitStep(group_, step_timeout_));
  executed.completed = outcome.completed;
  for (const rpc::StepResult& r : outcome.results) {
    executed.rank_seconds =
        std::max(executed.rank_seconds, r.timings().compute_seconds() + r.timings().comm_seconds());
  }
  rpc::StepResult& leader = outcome.results[0];
  executed.sampled.reserve(leader.sampled_size());
  for (rpc::SampledToken& t : *leader.mutable_sampled()) {
    SampledToken token{t.seq_id(), t.token_id(), t.logprob(), {}};
    for (const v1::TopLogprob& alt : t.top()) token.top.emplace_back(alt.token_id(), alt.logprob());
    executed.sampled.push_back(std::move(token));
  }
  return executed;
}

}  // namespace shift
