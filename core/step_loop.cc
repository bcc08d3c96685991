#include "core/step_loop.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

// "[1,2,3]"
std::string JsonIds(const std::vector<uint64_t>& ids) {
  return absl::StrCat("[", absl::StrJoin(ids, ","), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<StepTrace>> StepTrace::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--step_trace: cannot open \"", path,
                                                   "\" for writing: ", std::strerror(errno)));
  }
  return std::unique_ptr<StepTrace>(new StepTrace(file));
}

StepTrace::~StepTrace() { std::fclose(file_); }

void StepTrace::Write(const Line& line) {
  const PlannedStep& step = *line.step;
  const StepRecord& record = *line.record;
  const ShiftDecision& d = record.decision;
  const StepShape& s = d.inputs;
  // Each sequence as [id, start position, tokens computed, new to the ranks].
  std::string seqs = "[";
  for (size_t i = 0; i < step.output.sequences.size(); ++i) {
    const ScheduledSequence& q = step.output.sequences[i];
    absl::StrAppend(&seqs, i ? "," : "", "[", q.seq_id, ",", q.start_position, ",",
                    q.token_ids.size(), ",", q.is_new ? 1 : 0, "]");
  }
  absl::StrAppend(&seqs, "]");
  // Each sampled token as [id, token].
  std::string sampled = "[";
  for (size_t i = 0; i < record.executed.sampled.size(); ++i) {
    const SampledToken& t = record.executed.sampled[i];
    absl::StrAppend(&sampled, i ? "," : "", "[", t.seq_id, ",", t.token_id, "]");
  }
  absl::StrAppend(&sampled, "]");
  nlohmann::json request_ids = nlohmann::json::object();
  for (const auto& [id, request_id] : step.arrived_request_ids) {
    request_ids[std::to_string(id)] = request_id;
  }
  const std::string predicted =
      d.predicted_seconds >= 0 ? absl::StrFormat("%.9g", d.predicted_seconds) : "null";
  absl::FPrintF(
      file_,
      "{\"t\":%.6f,\"group\":%u,\"step\":%u,\"mode\":\"%s\",\"tokens\":%d,"
      "\"sequences\":%d,\"decodes\":%d,\"max_context\":%d,\"attention\":%d,"
      "\"exploring\":%s,\"predicted_s\":%s,\"measured_s\":%.9g,\"rank_s\":%.9g,"
      "\"arrived\":%s,\"released\":%s,\"preempted\":%s,\"seqs\":%s,\"sampled\":%s,"
      "\"request_ids\":%s,\"ahead\":%s,\"plan_s\":%.9g,\"budget\":%s,"
      "\"budget_reason\":%s,\"budget_predicted_s\":%s}\n",
      line.t, line.group, record.step_id, StepModeName(d.mode), s.num_tokens, s.num_sequences,
      s.num_decodes, s.max_context, s.attention, d.exploring ? "true" : "false", predicted,
      record.seconds(), record.executed.rank_seconds, JsonIds(step.arrived), JsonIds(step.released),
      JsonIds(step.output.preempted), seqs, sampled,
      request_ids.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
      step.ahead ? "true" : "false", step.plan_seconds,
      step.budget ? absl::StrCat(step.budget->prefill_tokens) : "null",
      step.budget ? absl::StrCat("\"", BudgetReasonName(step.budget->reason), "\"") : "null",
      step.budget && step.budget_predicted_seconds >= 0
          ? absl::StrFormat("%.9g", step.budget_predicted_seconds)
          : "null");
  std::fflush(file_);
}

StepLoop::StepLoop(Scheduler* scheduler, ShiftPolicy* policy, StepExecutor* executor,
                   const Clock* clock, StepTrace* trace, uint32_t group)
    : scheduler_(scheduler),
      policy_(policy),
      executor_(executor),
      clock_(clock),
      trace_(trace),
      group_(group),
      started_(clock->Now()) {}

double StepLoop::margin() const {
  if (ratios_.size() < 8) return 1.0;
  std::vector<double> r(ratios_.begin(), ratios_.end());
  const size_t at = r.size() * 9 / 10;
  std::nth_element(r.begin(), r.begin() + at, r.end());
  return std::max(1.0, r[at]);
}

std::optional<BudgetChoice> StepLoop::Budget() {
  StepPreview preview = scheduler_->Preview(tpot_target_, ttft_target_);
  if (tpot_target_ <= 0 && preview.target <= 0) return std::nullopt;
  BudgetQuestion q;
  q.decodes = preview.decodes;
  q.prefills = std::move(preview.prefills);
  q.max_tokens = scheduler_->config().max_num_batched_tokens;
  q.max_sequences = scheduler_->config().max_num_seqs;
  if (preview.target > 0) q.seconds = preview.slack / margin();
  if (starved_steps_ >= kStarvationSteps) q.min_prefill = scheduler_->config().block_size;
  BudgetChoice choice =
      ChooseBudget(q, [this](const StepShape& shape) -> std::optional<std::pair<StepMode, double>> {
        std::optional<std::pair<StepMode, double>> best;
        for (StepMode mode : policy_->CandidateModes(shape)) {
          const double t = cost_.Predict(shape, mode, kMinCostSamples);
          if (t >= 0 && (!best || t < best->second)) best = std::make_pair(mode, t);
        }
        return best;
      });
  choice.target_seconds = preview.target;
  const bool starved = !q.prefills.empty() && choice.prefill_tokens == 0;
  starved_steps_ = starved ? starved_steps_ + 1 : 0;
  if (choice.reason == BudgetReason::kTargetUnmet) ++target_unmet_steps_;
  return choice;
}

std::optional<PlannedStep> StepLoop::Plan() {
  const absl::Time planning = clock_->Now();
  std::optional<BudgetChoice> budget = Budget();
  SchedulerOutput out = scheduler_->Schedule(budget ? budget->prefill_tokens : -1);
  pending_released_.insert(pending_released_.end(), out.released_seq_ids.begin(),
                           out.released_seq_ids.end());
  pending_arrived_.insert(pending_arrived_.end(), out.arrived.begin(), out.arrived.end());
  if (out.empty()) {
    last_completed_.reset();  // waiting is not the loop's overhead
    return std::nullopt;
  }
  out.follows_previous = last_completed_.has_value();
  PlannedStep step;
  step.decision = policy_->Decide({out.num_tokens, static_cast<int64_t>(out.sequences.size()),
                                   out.num_decodes, out.max_context, out.attention});
  step.output = std::move(out);
  step.released = std::move(pending_released_);
  step.arrived = std::move(pending_arrived_);
  if (trace_ != nullptr) {
    for (uint64_t id : step.arrived) {
      const Request* r = scheduler_->Find(id);
      if (r != nullptr && !r->request_id.empty())
        step.arrived_request_ids.emplace_back(id, r->request_id);
    }
  }
  pending_released_.clear();
  pending_arrived_.clear();
  if (budget) {
    step.budget = budget;
    step.budget_predicted_seconds =
        cost_.Predict(step.decision.inputs, step.decision.mode, kMinCostSamples);
  }
  step.plan_seconds = absl::ToDoubleSeconds(clock_->Now() - planning);
  return step;
}

absl::StatusOr<ExecutedStep> StepLoop::Execute(const PlannedStep& step) {
  return executor_->Execute(step.output, step.decision.mode, step.released);
}

std::optional<PlannedStep> StepLoop::PlanAhead(const PlannedStep& running) {
  if (!running.output.preempted.empty()) return std::nullopt;
  std::optional<PlannedStep> step = Plan();
  if (step) {
    step->ahead = true;
    step->output.follows_previous = true;  // even when `running` followed a wait
  }
  return step;
}

absl::Status StepLoop::Start(const PlannedStep& step) {
  return executor_->Start(step.output, step.decision.mode, step.released);
}

absl::StatusOr<StepRecord> StepLoop::Finish(const PlannedStep& step,
                                            absl::StatusOr<ExecutedStep> executed) {
  if (!executed.ok()) {
    // The ranks lost every sequence: all running requests recompute.
    scheduler_->RequeueAll();
    pending_released_.clear();
    last_completed_.reset();
    return executed.status();
  }
  StepRecord record;
  record.step_id = step.output.step_id;
  record.decision = step.decision;
  record.executed = *std::move(executed);
  // A step started ahead waited behind the one before: its own time runs
  // from that one's end.
  if (step.ahead && last_completed_ && record.executed.started < *last_completed_) {
    record.executed.started = *last_completed_;
  }
  if (last_completed_) {
    record.overhead_seconds = absl::ToDoubleSeconds(record.executed.started - *last_completed_);
  }
  last_completed_ = record.executed.completed;
  policy_->Observe(record.decision, record.seconds());
  // Learnt always: a request may bring its own target (Request::params).
  cost_.Add(record.decision.mode, record.decision.inputs, record.seconds());
  if (step.budget_predicted_seconds > 0) {
    ratios_.push_back(record.seconds() / step.budget_predicted_seconds);
    if (ratios_.size() > kMarginWindow) ratios_.pop_front();
  }
  record.updates =
      scheduler_->UpdateFromOutput(step.output, record.executed.sampled, record.decision.mode);
  if (trace_ != nullptr) {
    trace_->Write({absl::ToDoubleSeconds(clock_->Now() - started_), group_, &step, &record});
  }
  return record;
}

absl::StatusOr<std::optional<StepRecord>> StepLoop::RunStep() {
  if (plan_ahead_) return RunStepAhead();
  std::optional<PlannedStep> step = Plan();
  if (!step) return std::nullopt;
  absl::StatusOr<ExecutedStep> executed = Execute(*step);
  absl::StatusOr<StepRecord> record = Finish(*step, std::move(executed));
  if (!record.ok()) return record.status();
  return std::optional<StepRecord>(*std::move(record));
}

absl::StatusOr<std::optional<StepRecord>> StepLoop::RunStepAhead() {
  if (!in_flight_) {
    std::optional<PlannedStep> step = Plan();
    if (!step) return std::nullopt;
    if (absl::Status started = Start(*step); !started.ok()) {
      return Finish(*step, started).status();
    }
    in_flight_ = std::move(step);
  }
  PlannedStep step = *std::move(in_flight_);
  in_flight_.reset();
  std::optional<PlannedStep> ahead = PlanAhead(step);
  const absl::Status ahead_started = ahead ? Start(*ahead) : absl::OkStatus();
  absl::StatusOr<StepRecord> record = Finish(step, executor_->Wait());
  if (!record.ok()) {
    // The ranks lost every sequence: the step planned ahead is void.
    executor_->Abandon();
    return record.status();
  }
  if (ahead) {
    if (!ahead_started.ok()) return Finish(*ahead, ahead_started).status();
    in_flight_ = std::move(ahead);
  }
  return std::optional<StepRecord>(*std::move(record));
}

}  // namespace shift
