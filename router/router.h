// The router: owns every request from arrival to last token. It validates
// and tokenizes requests, gives each to the worker group with the least
// outstanding work (groups are data parallel), and runs the core step loop
// (core/step_loop.h) for each group on a thread of its own, with a
// HubExecutor that sends each step to the group's ranks. Each step's tokens
// go to the output processor, which streams text to every request's sink
// on its own threads, so no client can hold up a step. A step that fails on
// a live group re-queues its requests there; a group that loses a rank is
// out of service until it re-forms, and its requests move to the other
// groups (recomputed, so their streams go on) or, with none left or after
// --requeue_limit moves, fail with UNAVAILABLE. Draining stops admission
// and lets open requests finish.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/defaults.h"
#include "common/generation_config.h"
#include "common/model_config.h"
#include "common/tokenizer.h"
#include "core/clock.h"
#include "core/scheduler.h"
#include "core/shift_policy.h"
#include "core/step_loop.h"
#include "router/hub_executor.h"
#include "router/output_processor.h"
#include "router/router_metrics.h"
#include "router/worker_hub.h"
#include "shift/v1/generation.pb.h"

namespace shift {

struct RouterOptions {
  std::string model_name;
  uint32_t num_groups = 1;  // data-parallel worker groups 0..num_groups-1
  uint32_t world_size = 1;  // ranks per group
  // The base mode's Ulysses degree (common/step_mode.h, GroupLayout);
  // 0: world_size (pure SP).
  uint32_t sp_degree = 0;
  int max_requeues = defaults::kRequeueLimit;  // moves to another group before UNAVAILABLE
  // Limits; num_blocks is taken from the ranks (the smallest) when the group
  // forms, and block_size must match theirs.
  SchedulerConfig scheduler;
  std::string shift_policy = "threshold";
  int64_t shift_threshold = defaults::kShiftThreshold;
  int64_t max_queued_requests = defaults::kMaxQueuedRequests;
  absl::Duration step_timeout = absl::Seconds(defaults::kStepTimeoutSeconds);
  // The output side: its threads, and how long a request whose sink is full
  // may stay paused before it ends with RESOURCE_EXHAUSTED.
  OutputOptions output;
  // Responses a Generate stream may hold undelivered before its request
  // pauses (GenerationService).
  int64_t max_undelivered_deltas = defaults::kMaxUndeliveredDeltas;
  // What one request may carry.
  int64_t max_stop_strings = defaults::kMaxStopStrings;
  int64_t max_stop_bytes = defaults::kMaxStopBytes;
  // The model's generation_config.json: its EOS ids stop generation beside
  // config.json's, its sampling values fill fields a request leaves unset.
  GenerationDefaults generation;
  // Appends one JSON line per step here (core/step_loop.h, StepTrace); ""
  // writes none.
  std::string step_trace;
  // Plan and send each step while the one before runs (docs/architecture.md,
  // Planning ahead), so that ranks do not wait for the router between steps.
  bool async_scheduling = true;
  // A time-per-output-token target for each step's budget (0: off;
  // core/step_budget.h).
  double tpot_slo_ms = 0;
  // With it, a time-to-first-token target (0: off; StepLoop::set_ttft_target).
  double ttft_slo_ms = 0;
};

class Router {
 public:
  // `tokenizer`, `hub`, `metrics` and `clock` must outlive the router.
  static absl::StatusOr<std::unique_ptr<Router>> Create(RouterOptions options,
                                                        const ModelConfig& config,
                                                        const Tokenizer& tokenizer, WorkerHub* hub,
                                                        RouterMetrics* metrics, const Clock* clock);
  ~Router();

  // Queues a request whose output goes to `sink`; returns its id.
  // INVALID_ARGUMENT for a bad request, RESOURCE_EXHAUSTED when the queue is
  // full, UNAVAILABLE when no group is ready or the router is stopping.
  // `tenant` (the API key's; "" without keys) bounds prefix-cache sharing.
  absl::StatusOr<uint64_t> Submit(const v1::GenerateRequest& request, RequestSink* sink,
                                  const std::string& tenant = "");
  // The request_id its log lines and final message carry: the client's, or
  // "shift-<id>" with the id Submit returned.
  static std::string RequestId(const v1::GenerateRequest& request, uint64_t id) {
    return request.request_id().empty() ? absl::StrCat("shift-", id) : request.request_id();
  }
  // A text prompt's token ids as Submit would make them (INVALID_ARGUMENT
  // for text too long to fit --max_model_len, refused before tokenizing).
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(const std::string& text, bool parse_special,
                                                    bool add_special_tokens) const;
  // Ends a request whose client went away (`code` CANCELLED or
  // DEADLINE_EXCEEDED): its blocks are freed now and its sink is never
  // called again once this returns.
  void Cancel(uint64_t id, absl::StatusCode code);
  // The request's sink, which had said it was full, has room again.
  void Resume(uint64_t id);
  // Stops admitting (new requests get UNAVAILABLE, ready() is false) and
  // waits up to `timeout` for open requests to finish; true if they all did.
  bool Drain(absl::Duration timeout);
  // Stops the step loops; every request still open ends with UNAVAILABLE.
  void Stop();

  // Whether some group is formed and the router admits requests.
  bool ready();
  const RouterOptions& options() const { return options_; }
  v1::ModelInfo ModelInfo() const;
  v1::ServerStatus Status();

 private:
  // What the router keeps of a request besides its scheduler entry and its
  // output stream: where it runs, its share of the load, how often it moved.
  struct Stream {
    uint32_t group = 0;
    int64_t work = 0;  // prompt + max_tokens
    int requeues = 0;
  };
  // One data-parallel worker group and its step loop.
  struct Group {
    uint32_t id = 0;
    // Made when the group first forms (the ranks say how many KV blocks).
    std::unique_ptr<Scheduler> scheduler;
    std::unique_ptr<HubExecutor> executor;
    std::unique_ptr<StepLoop> loop;
    bool complete = false;       // formed and in service
    int64_t outstanding = 0;     // sum of its requests' work
    int64_t cached_tokens = 0;   // the scheduler's count when last reported
    int64_t queried_tokens = 0;  // likewise
    std::optional<StepMode> last_mode;
    bool target_unmet_logged = false;  // --tpot_slo_ms under the decodes' floor, said once
    v1::ModeCounters modes;
    // The last step's updates, handed to the output side once the next
    // step is planned.
    std::vector<RequestUpdate> unstreamed;
    std::thread thread;
  };

  Router(RouterOptions options, const ModelConfig& config, const Tokenizer& tokenizer,
         WorkerHub* hub, RouterMetrics* metrics, const Clock* clock,
         std::unique_ptr<ShiftPolicy> policy);
  // A group's thread: waits for its ranks, then runs its step loop.
  void Loop(Group* g);
  // Hands the group's unstreamed updates to the output side.
  void StreamOutput(Group* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans the group's next step (nullopt: nothing can run now), ahead of
  // `running`'s results when given (StepLoop::PlanAhead), and counts what
  // planning did (prefix-cache lookups, preemptions).
  std::optional<PlannedStep> PlanStep(Group* g, const PlannedStep* running = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a failed step: the group's running requests re-queue (the ranks
  // lost them), or leave it when it lost a rank.
  void StepFailed(Group* g, const absl::Status& status, int64_t running)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a step that ran and keeps its updates for StreamOutput.
  void Record(Group* g, const PlannedStep& step, StepRecord record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for the group's ranks; on first formation, sizes its scheduler.
  bool AwaitGroup(Group* g);
  absl::StatusOr<std::unique_ptr<Request>> Validate(const v1::GenerateRequest& request);
  // The complete group with the least outstanding work (null if none).
  Group* PickGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves every request of `from` (out of service) to other groups, or ends
  // it with UNAVAILABLE saying `why`.
  void Evacuate(Group* from, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a request's stream with an error (its scheduler entry is gone).
  void Fail(uint64_t id, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateLoad(const Group* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs a refused request (rate-limited).
  void LogRefusal(const std::string& request_id, const absl::Status& status);
  // The group serving open request `id` (null if none, or not formed yet).
  Group* GroupOf(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pauses or unpauses request `id` as the output side says it should be.
  void FollowPause(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The output side's calls (OutputProcessor::Hooks).
  void OnStreamDone(uint64_t id, bool stopped);
  void OnStreamPause(uint64_t id);  // full, or drained
  void OnStreamStalled(uint64_t id);

  const RouterOptions options_;
  const ModelConfig config_;      // with generation_config.json's EOS ids
  int64_t max_prompt_bytes_ = 0;  // longer text cannot fit in max_model_len tokens
  const Tokenizer& tokenizer_;
  WorkerHub* hub_;
  RouterMetrics* metrics_;
  const Clock* clock_;
  const absl::Time started_;

  // Guards the groups (their schedulers and step loops), the policy and the
  // streams. Held to admit, cancel, plan and finish a step; never while a
  // step runs on the ranks or output is delivered.
  absl::Mutex mu_;
  std::unique_ptr<ShiftPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<StepTrace> step_trace_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Tenant names by number (Request::tenant); "" is 0. As many as API keys.
  absl::flat_hash_map<std::string, uint64_t> tenants_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Stream> streams_ ABSL_GUARDED_BY(mu_);
  absl::Mutex refusals_mu_;
  absl::Time refusals_window_ ABSL_GUARDED_BY(refusals_mu_) = absl::InfinitePast();
  int64_t refusals_in_window_ ABSL_GUARDED_BY(refusals_mu_) = 0;
  int64_t refusals_left_out_ ABSL_GUARDED_BY(refusals_mu_) = 0;
  // Takes no lock of the router's while it holds its own; calls back
  // through OnStream* with none held.
  std::unique_ptr<OutputProcessor> output_;
};

}  // namespace shift
