// The step loop, written once: schedule → shift policy → execute → update
// from output (docs/architecture.md, A step's path). The router runs one per
// worker group, shift-generate one in process, a simulator one on a virtual
// clock; the scheduler, policy, executor and clock are injected. It does
// steps only: what becomes of a request's tokens (text, stop strings,
// streaming) is the caller's business, done outside this loop.
//
// A caller whose scheduler is shared with other threads (the router admits
// and cancels requests while a step runs) calls the three phases itself:
// Plan and Finish under the lock that guards the scheduler and the policy,
// Execute without it. A caller with one thread calls RunStep.
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/scheduler.h"
#include "core/shift_policy.h"
#include "core/step_budget.h"
#include "core/step_cost.h"
#include "core/step_executor.h"

namespace shift {

// One JSON line per step (--step_trace): its shape, mode, sequences and
// tokens, and its predicted and measured seconds, and the request_id of each
// sequence that arrived since the last step ("request_ids": {seq: id}, the
// key to the access log); a front end that runs the same requests through
// the same loop writes the same lines but for the timing fields ("t",
// "predicted_s", "measured_s", "rank_s", "plan_s": the time to plan it) and
// the request ids it gave. "ahead": planned while the step before ran;
// "budget", "budget_reason": its prefill budget with a latency target
// (core/step_budget.h), else null; "budget_predicted_s": the loop's cost
// model's seconds for the step as planned (a timing field; null without a
// budget or a prediction).
class StepTrace {
 public:
  // Appends to `path`; INVALID_ARGUMENT naming the path when it cannot.
  static absl::StatusOr<std::unique_ptr<StepTrace>> Open(const std::string& path);
  ~StepTrace();
  StepTrace(const StepTrace&) = delete;
  StepTrace& operator=(const StepTrace&) = delete;

  struct Line;
  void Write(const Line& line);

 private:
  explicit StepTrace(std::FILE* file) : file_(file) {}
  std::FILE* file_;
};

// A step built by Plan, to be executed and then finished.
struct PlannedStep {
  SchedulerOutput output;
  ShiftDecision decision;
  std::vector<uint64_t> released;  // sequences the ranks forget first
  std::vector<uint64_t> arrived;   // requests queued since the last step
  // With a trace: the request_id of each arrival still known, by sequence.
  std::vector<std::pair<uint64_t, std::string>> arrived_request_ids;
  // Planned while the step before was running, ahead of its results.
  bool ahead = false;
  // The loop's time to plan it (schedule and shift policy), on its clock.
  double plan_seconds = 0;
  // With a latency target: the prefill budget it was planned with, and the
  // loop's cost model's prediction of its time in its mode (< 0: none).
  std::optional<BudgetChoice> budget;
  double budget_predicted_seconds = -1;
};

// What a step did, for the caller's metrics and output processing.
struct StepRecord {
  uint64_t step_id = 0;
  ShiftDecision decision;
  ExecutedStep executed;
  // Measured: started to completed.
  double seconds() const { return absl::ToDoubleSeconds(executed.completed - executed.started); }
  // The loop's own time between the previous step's end and this one's
  // start, when the loop went straight on (< 0: it had been idle).
  double overhead_seconds = -1;
  // One per request that got a token or finished.
  std::vector<RequestUpdate> updates;
};

struct StepTrace::Line {
  double t = 0;  // seconds since the loop started, on its clock
  uint32_t group = 0;
  const PlannedStep* step = nullptr;
  const StepRecord* record = nullptr;
};

class StepLoop {
 public:
  // None is owned; all must outlive the loop. `trace` may be null.
  StepLoop(Scheduler* scheduler, ShiftPolicy* policy, StepExecutor* executor, const Clock* clock,
           StepTrace* trace = nullptr, uint32_t group = 0);

  // Builds the next step and picks its mode. nullopt: nothing can run now
  // (nothing queued, or nothing fits this instant); the loop counts as idle.
  std::optional<PlannedStep> Plan();
  // The next step, planned while `running` has not finished (marked
  // `ahead`); nullopt when nothing can run, or after a preemption in
  // `running` (its victims' tokens in flight would be thrown away).
  std::optional<PlannedStep> PlanAhead(const PlannedStep& running);
  // Runs a planned step on the executor (no lock needed).
  absl::StatusOr<ExecutedStep> Execute(const PlannedStep& step);
  // The same in two halves, for a caller that plans the next step between
  // them (planning ahead): Start hands the step to the executor, Wait
  // returns the oldest started step's result; Abandon drops the started
  // steps not waited for (after a failed step). No lock needed.
  absl::Status Start(const PlannedStep& step);
  absl::StatusOr<ExecutedStep> Wait() { return executor_->Wait(); }
  void Abandon() { executor_->Abandon(); }
  // Applies the step's result: the policy learns its time, the scheduler
  // takes its tokens, the trace gets its line. On failure every running
  // request goes back to the queue to recompute (the ranks lost them) and
  // the executor's error is returned.
  absl::StatusOr<StepRecord> Finish(const PlannedStep& step, absl::StatusOr<ExecutedStep> executed);
  // The caller waits for work without planning (nothing queued or
  // running): the next step's start is not the loop's overhead.
  void Idle() { last_completed_.reset(); }
  // Plan, Execute and Finish in one call; nullopt when nothing could run.
  // With plan_ahead, each call finishes one step with the next one already
  // planned and started (unless the finished step preempted: its
  // successor is planned after its results): decodes then carry pending
  // tokens the ranks resolve (core/scheduler.h), and the ranks need not
  // wait for the loop between steps. The policy then decides a step's mode
  // before the previous step's time is known (a one-step lag).
  absl::StatusOr<std::optional<StepRecord>> RunStep();
  void set_plan_ahead(bool on) { plan_ahead_ = on; }
  // Steps sized to a latency target (docs/architecture.md): each step's
  // prefill tokens are the most that keep its predicted time within
  // `seconds` per output token of every running decode, or of the decode's
  // own target where it is tighter (0: the requests' own targets only; the
  // fixed cap for requests without one). The loop learns step times from
  // every step it finishes.
  void set_tpot_target(double seconds) { tpot_target_ = seconds; }
  double tpot_target() const { return tpot_target_; }
  // With a time-per-output-token target, a time-to-first-token target too
  // (0: none): a step takes more prefill than the first target allows when a
  // prompt would otherwise miss the second (BudgetReason::kTtft).
  void set_ttft_target(double seconds) { ttft_target_ = seconds; }
  // Steps planned whose decodes alone were predicted over the target.
  int64_t target_unmet_steps() const { return target_unmet_steps_; }
  // The factor predictions are held to (>= 1): the 90th percentile of
  // measured over predicted seconds of the last kMarginWindow steps.
  double margin() const;

  // A prefill may go this many steps in a row with no token budgeted while
  // prefills wait; the next step then budgets at least a block of tokens.
  static constexpr int kStarvationSteps = 4;
  // Steps of a mode before its time is predicted (the cost policy's too).
  static constexpr int kMinCostSamples = 16;
  static constexpr size_t kMarginWindow = 64;
  // A step is started and not finished (plan_ahead): call RunStep again
  // even when the scheduler has no work left.
  bool busy() const { return in_flight_.has_value(); }

  Scheduler* scheduler() const { return scheduler_; }

 private:
  absl::StatusOr<std::optional<StepRecord>> RunStepAhead();

  Scheduler* scheduler_;
  ShiftPolicy* policy_;
  StepExecutor* executor_;
  const Clock* clock_;
  StepTrace* trace_;
  uint32_t group_;
  const absl::Time started_;
  // Releases and arrivals of schedules that built no step, for the next.
  std::vector<uint64_t> pending_released_;
  std::vector<uint64_t> pending_arrived_;
  // When the last step ended, if the loop has not idled since.
  std::optional<absl::Time> last_completed_;
  bool plan_ahead_ = false;
  // Steps sized to a latency target.
  double tpot_target_ = 0;
  double ttft_target_ = 0;
  StepCostModel cost_;
  std::deque<double> ratios_;  // measured / predicted, the latest steps
  int starved_steps_ = 0;      // in a row with prefills waiting and none budgeted
  int64_t target_unmet_steps_ = 0;
  // The budget for the next Schedule.
  std::optional<BudgetChoice> Budget();
  // RunStep with plan_ahead: the step started and not yet finished.
  std::optional<PlannedStep> in_flight_;
};

}  // namespace shift
