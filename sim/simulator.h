// shift-sim's engine room: the router's own core loop — scheduler, block
// manager, shift policy and step loop (core/), not copies of them — on a
// virtual clock, with an executor that prices each step instead of running
// a model. Requests arrive at their times (or, to replay a step trace,
// before a given step); each group's step ends when its price says; the
// tokens reach the client when their step ends, as the router streams them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/scheduler.h"
#include "core/shift_policy.h"
#include "core/step_executor.h"
#include "core/step_loop.h"
#include "workload/plots.h"
#include "workload/workload.h"

namespace shift::sim {

// What a step costs, in seconds, in `mode`.
using StepTimer = std::function<double(const SchedulerOutput& step, StepMode mode)>;

// An executor for the virtual clock: the step starts `gap` after the clock
// reads now (the loop's own time between steps), or when the step before
// ends if that is later (a step planned ahead waits for the running one,
// and its gap is hidden), and ends its price later (plus `switch_s` when
// its mode is not the previous step's);
// every sampling sequence gets a token (never an end of sequence: simulated
// requests run to max_tokens, as shift-bench's ignore EOS).
class PricedExecutor final : public StepExecutor {
 public:
  PricedExecutor(const Clock* clock, StepTimer timer, int32_t vocab_size, double gap_s,
                 double switch_s = 0)
      : clock_(clock),
        timer_(std::move(timer)),
        vocab_size_(vocab_size),
        gap_s_(gap_s),
        switch_s_(switch_s) {}
  absl::StatusOr<ExecutedStep> Execute(const SchedulerOutput& step, StepMode mode,
                                       absl::Span<const uint64_t> released) override;
  // When the last step run ends.
  absl::Time last_completed() const { return last_completed_; }

 private:
  const Clock* clock_;
  StepTimer timer_;
  int32_t vocab_size_;
  double gap_s_;
  double switch_s_;
  std::optional<StepMode> last_mode_;
  absl::Time last_completed_ = absl::InfinitePast();
};

struct SimOptions {
  SchedulerConfig scheduler;  // num_blocks: each group's
  uint32_t num_groups = 1;
  std::string policy = "threshold";
  int64_t threshold = 256;
  int64_t max_queued_requests = 1 << 30;  // waiting requests before RESOURCE_EXHAUSTED
  int32_t vocab_size = 32000;
  double loop_overhead_s = 0;    // the loop's gap between steps
  double switch_overhead_s = 0;  // a step in the other mode than the last
  // Each step planned while the one before runs (--async_scheduling, the
  // router's StepLoop::PlanAhead): the loop's gap is hidden behind it.
  bool plan_ahead = false;
  // Steps sized to a time-per-output-token target (0: off;
  // core/step_budget.h).
  double tpot_slo_s = 0;
  double ttft_slo_s = 0;  // with it (StepLoop::set_ttft_target)
  // A closed loop: `concurrency` requests in flight, the next sent when one
  // ends, until `duration_s` (0: open loop, requests at their times).
  int32_t concurrency = 0;
  double duration_s = 0;
  // Closed loops: the prompt of request `index`.
  std::function<std::vector<int32_t>(uint64_t index)> closed_loop_prompt;
  StepTrace* trace = nullptr;  // every group's steps (may be null)
};

// A request with a step to arrive before instead of a time (one group
// only): queued just before that step is planned, or as soon as the loop
// has nothing else to do, as shift-generate --requests does.
struct StepArrival {
  int64_t before_step = 1;
  // Queued only once the step before it has ended: the router it replays
  // did not plan that step ahead (it had idled). Else also while the step
  // before runs, to be planned ahead of it.
  bool after_step_ended = false;
};

struct SimResult {
  std::vector<workload::Outcome> outcomes;  // in arrival order
  std::vector<workload::ModeSample> modes;  // step counts over time
  int64_t steps = 0, tp_steps = 0, sp_steps = 0, switches = 0, preemptions = 0;
  int64_t num_blocks = 0;  // per group
  double busy_s = 0;       // virtual seconds some group was running a step
  double end_s = 0;        // virtual time of the last event
};

// Runs `requests` (times in seconds from 0; with `arrivals`, one per
// request, by step instead) through `options.num_groups` groups whose steps
// take `timer`'s seconds.
absl::StatusOr<SimResult> Simulate(const SimOptions& options,
                                   std::vector<workload::Request> requests, StepTimer timer,
                                   const std::vector<StepArrival>* arrivals = nullptr);

}  // namespace shift::sim
