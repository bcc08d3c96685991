#include "sim/simulator.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "core/group_choice.h"

namespace shift::sim {
namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();

absl::Time At(double seconds) { return absl::UnixEpoch() + absl::Seconds(seconds); }
double SecondsOf(absl::Time t) { return absl::ToDoubleSeconds(t - absl::UnixEpoch()); }

// One data-parallel group: its own scheduler and loop, the shared policy.
struct Group {
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<PricedExecutor> executor;
  std::unique_ptr<StepLoop> loop;
  std::optional<PlannedStep> running;  // the step in flight
  double done_at = kNever;
  // Planning ahead: the step started behind the running one, when it ends,
  // and whether the running one has had its chance to be planned ahead of.
  std::optional<PlannedStep> ahead;
  double ahead_done_at = kNever;
  bool ahead_tried = false;
  int64_t outstanding = 0;  // prompt + max_tokens of its open requests
  int64_t steps = 0;
  std::optional<StepMode> last_mode;
};

// A request's progress as its client sees it.
struct Client {
  workload::Outcome outcome;
  uint32_t group = 0;
  int64_t work = 0;
};

}  // namespace

absl::StatusOr<ExecutedStep> PricedExecutor::Execute(const SchedulerOutput& step, StepMode mode,
                                                     absl::Span<const uint64_t> released) {
  ExecutedStep out;
  out.started = std::max(clock_->Now() + absl::Seconds(gap_s_), last_completed_);
  double seconds = timer_(step, mode);
  if (last_mode_ && *last_mode_ != mode) seconds += switch_s_;
  last_mode_ = mode;
  out.completed = out.started + absl::Seconds(seconds);
  last_completed_ = out.completed;
  out.rank_seconds = seconds;
  for (const ScheduledSequence& s : step.sequences) {
    if (!s.sample) continue;
    // Any id will do (the requests ignore EOS); vary it so output blocks of
    // different sequences do not hash alike.
    const uint64_t mix =
        s.seq_id * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(s.start_position + 1);
    out.sampled.push_back(
        {s.seq_id, static_cast<int32_t>(mix % static_cast<uint64_t>(vocab_size_)), 0.0f, {}});
  }
  return out;
}

absl::StatusOr<SimResult> Simulate(const SimOptions& options,
                                   std::vector<workload::Request> requests, StepTimer timer,
                                   const std::vector<StepArrival>* arrivals) {
  if (options.num_groups < 1) return absl::InvalidArgumentError("needs at least one group");
  if (arrivals != nullptr &&
      (arrivals->size() != requests.size() || options.num_groups != 1 || options.concurrency > 0)) {
    return absl::InvalidArgumentError(
        "arrivals by step need one per request, one group and an open loop");
  }
  ManualClock clock(At(0));
  auto advance = [&](double t) {
    const absl::Time to = At(t);
    if (to > clock.Now()) clock.Advance(to - clock.Now());
  };
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<ShiftPolicy> policy,
                         MakeShiftPolicy(options.policy, options.threshold));
  std::vector<Group> groups(options.num_groups);
  for (uint32_t g = 0; g < options.num_groups; ++g) {
    groups[g].scheduler = std::make_unique<Scheduler>(options.scheduler, &clock);
    groups[g].executor = std::make_unique<PricedExecutor>(
        &clock, timer, options.vocab_size, options.loop_overhead_s, options.switch_overhead_s);
    groups[g].loop = std::make_unique<StepLoop>(groups[g].scheduler.get(), policy.get(),
                                                groups[g].executor.get(), &clock, options.trace, g);
    groups[g].loop->set_tpot_target(options.tpot_slo_s);
    groups[g].loop->set_ttft_target(options.ttft_slo_s);
  }
  const bool closed = options.concurrency > 0;
  std::vector<Client> clients;
  clients.reserve(requests.size());
  SimResult result;
  size_t next = 0;         // the next request to send
  int64_t in_flight = 0;   // closed loops
  double closed_next = 0;  // when a closed loop may send again
  // Sends request `next` at `now`: to the group with the least outstanding
  // work (the router's choice), or refused when the queue is full.
  auto send = [&](double now) -> absl::Status {
    workload::Request& wr = requests[next];
    const uint64_t id = next + 1;  // the router numbers requests from 1
    if (wr.prompt.empty() && options.closed_loop_prompt)
      wr.prompt = options.closed_loop_prompt(next);
    ++next;
    Client c;
    c.outcome.start = now;
    c.outcome.prompt_tokens = static_cast<int64_t>(wr.prompt.size());
    auto r = std::make_unique<Request>();
    r->id = id;
    r->prompt = std::move(wr.prompt);
    r->params.max_tokens = wr.max_tokens;
    r->params.ignore_eos = true;
    r->arrival = clock.Now();
    c.work = RequestWork(*r);
    // The router's placement and its queue limit.
    std::vector<GroupLoad> loads;
    int64_t waiting = 0;
    for (const Group& g : groups) {
      waiting += g.scheduler->num_waiting();
      loads.push_back({true, g.outstanding});
    }
    const int best = PickLeastLoaded(loads);
    if (waiting >= options.max_queued_requests) {
      c.outcome.code = "RESOURCE_EXHAUSTED";
      clients.push_back(std::move(c));
      return absl::OkStatus();
    }
    if (absl::Status added = groups[best].scheduler->AddRequest(std::move(r)); !added.ok()) {
      c.outcome.code = "INVALID_ARGUMENT";
      clients.push_back(std::move(c));
      return absl::OkStatus();
    }
    c.group = static_cast<uint32_t>(best);
    groups[best].outstanding += c.work;
    clients.push_back(std::move(c));
    if (closed) ++in_flight;
    return absl::OkStatus();
  };
  // Starts `g`'s next step at the clock's time, if it has one, and plans
  // ahead of the running step once, as the router does right after sending
  // it. A priced step never fails: its result waits in the executor.
  auto start = [&](Group& g) -> absl::Status {
    if (!g.running) {
      if (!g.scheduler->HasWork()) return absl::OkStatus();
      std::optional<PlannedStep> step = g.loop->Plan();
      if (!step) return absl::OkStatus();
      SHIFT_RETURN_IF_ERROR(g.loop->Start(*step));
      g.done_at = SecondsOf(g.executor->last_completed());
      g.running = std::move(step);
      g.ahead_tried = false;
    }
    if (!options.plan_ahead || g.ahead_tried) return absl::OkStatus();
    g.ahead_tried = true;
    g.ahead = g.loop->PlanAhead(*g.running);
    if (!g.ahead) return absl::OkStatus();
    SHIFT_RETURN_IF_ERROR(g.loop->Start(*g.ahead));
    g.ahead_done_at = SecondsOf(g.executor->last_completed());
    return absl::OkStatus();
  };
  // Ends `g`'s step at the clock's time: the scheduler takes its tokens and
  // the clients see them; the step planned ahead, if any, runs on.
  auto finish = [&](Group& g) -> absl::Status {
    PlannedStep step = *std::move(g.running);
    g.running.reset();
    g.done_at = kNever;
    if (g.ahead) {
      g.running = std::move(g.ahead);
      g.ahead.reset();
      g.done_at = g.ahead_done_at;
      g.ahead_tried = false;
    }
    SHIFT_ASSIGN_OR_RETURN(StepRecord record, g.loop->Finish(step, g.loop->Wait()));
    const double now = SecondsOf(clock.Now());
    ++g.steps;
    ++result.steps;
    const StepMode mode = record.decision.mode;
    (mode == StepMode::kSequenceParallel ? result.sp_steps : result.tp_steps) += 1;
    if (g.last_mode && *g.last_mode != mode) ++result.switches;
    g.last_mode = mode;
    result.busy_s += record.seconds();
    result.preemptions += static_cast<int64_t>(step.output.preempted.size());
    for (const RequestUpdate& u : record.updates) {
      Client& c = clients[u.seq_id - 1];
      for (size_t i = 0; i < u.new_tokens.size(); ++i) {
        if (c.outcome.ttft < 0) c.outcome.ttft = now - c.outcome.start;
        c.outcome.token_times.push_back(now);
        ++c.outcome.output_tokens;
      }
      if (u.finish != FinishReason::kNone) {
        c.outcome.e2e = now - c.outcome.start;
        c.outcome.cached_tokens = u.num_cached_tokens;
        g.outstanding -= c.work;
        if (closed) {
          --in_flight;
          closed_next = now;
        }
      }
    }
    return absl::OkStatus();
  };

  const size_t total = requests.size();
  int64_t skipped_to = 0;  // the step idling skipped ahead to (step arrivals)
  // When the next request is sent (never: no more for now).
  auto next_arrival = [&]() -> double {
    if (next >= total) return kNever;
    if (arrivals != nullptr) {
      // With nothing to do, skip ahead to the next arrivals, all those due
      // before the same step.
      // Due before the next step the group plans, and queued only when it
      // is about to plan one (none running, or one to plan ahead of).
      const Group& g = groups[0];
      const int64_t before = (*arrivals)[next].before_step;
      if (!g.scheduler->HasWork()) skipped_to = std::max(skipped_to, before);
      const int64_t next_step = g.steps + 1 + (g.running ? 1 : 0) + (g.ahead ? 1 : 0);
      const bool due = before <= std::max(next_step, skipped_to);
      const bool plans = !g.running || (options.plan_ahead && !g.ahead_tried &&
                                        !(*arrivals)[next].after_step_ended);
      return plans && due ? SecondsOf(clock.Now()) : kNever;
    }
    if (closed) {
      return in_flight < options.concurrency && closed_next < options.duration_s ? closed_next
                                                                                 : kNever;
    }
    return requests[next].at;
  };
  double sample_at = 0;
  for (;;) {
    const double arrival = next_arrival();
    Group* ending = nullptr;
    for (Group& g : groups) {
      if (g.running && (ending == nullptr || g.done_at < ending->done_at)) ending = &g;
    }
    const double step_end = ending != nullptr ? ending->done_at : kNever;
    if (arrival == kNever && step_end == kNever) {
      for (Group& g : groups) {
        if (g.scheduler->HasWork()) {
          return absl::InternalError("no step can run, yet requests are waiting");
        }
      }
      break;
    }
    if (arrival <= step_end) {
      advance(arrival);
      SHIFT_RETURN_IF_ERROR(send(SecondsOf(clock.Now())));
    } else {
      advance(step_end);
      SHIFT_RETURN_IF_ERROR(finish(*ending));
    }
    // Whatever else happens at this instant comes first; then idle groups
    // plan their next steps.
    const double now = SecondsOf(clock.Now());
    if (next_arrival() <= now) continue;
    bool ends_now = false;
    for (Group& g : groups) ends_now = ends_now || (g.running && g.done_at <= now);
    if (ends_now) continue;
    for (Group& g : groups) SHIFT_RETURN_IF_ERROR(start(g));
    if (now >= sample_at) {
      result.modes.push_back(
          {now, static_cast<double>(result.tp_steps), static_cast<double>(result.sp_steps)});
      sample_at = now + 0.5;
    }
  }
  result.end_s = SecondsOf(clock.Now());
  result.modes.push_back(
      {result.end_s, static_cast<double>(result.tp_steps), static_cast<double>(result.sp_steps)});
  result.num_blocks = options.scheduler.num_blocks;
  for (Client& c : clients) result.outcomes.push_back(std::move(c.outcome));
  return result;
}

}  // namespace shift::sim
