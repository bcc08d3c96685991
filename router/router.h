// The router's core: owns every request from arrival to last token. It
// validates and tokenizes requests, gives each to the worker group with the
// least outstanding work (groups are data parallel), and runs one step loop
// per group: build a step, let the shift policy pick TP or SP, send the plan
// through the worker hub, apply the sampled tokens, and stream text back
// through each request's sink. A step that fails on a live group re-queues
// its requests there; a group that loses a rank is out of service until it
// re-forms, and its requests move to the other groups (recomputed, so their
// streams go on) or, with none left or after --requeue_limit moves, fail
// with UNAVAILABLE. Draining stops admission and lets open requests finish.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/model_config.h"
#include "common/tokenizer.h"
#include "router/clock.h"
#include "router/router_metrics.h"
#include "router/scheduler.h"
#include "router/shift_policy.h"
#include "router/text_stream.h"
#include "router/worker_hub.h"
#include "shift/v1/generation.pb.h"

namespace shift {

struct RouterOptions {
  std::string model_name;
  std::string model_fingerprint;  // ranks must register with the same one
  uint32_t num_groups = 1;         // data-parallel worker groups 0..num_groups-1
  uint32_t world_size = 1;         // ranks per group
  int max_requeues = 3;            // moves to another group before UNAVAILABLE
  // Limits; num_blocks is taken from the ranks (the smallest) when the group
  // forms, and block_size must match theirs.
  SchedulerConfig scheduler;
  std::string shift_policy = "threshold";
  int64_t shift_threshold = 256;
  int64_t max_queued_requests = 1024;
  absl::Duration step_timeout = absl::Seconds(120);
  // Appends one JSON line per step here (its shape, mode, predicted and
  // measured seconds) for offline analysis; "" writes none.
  std::string step_trace;
};

// Where a request's output goes. Called on the router's step thread, one
// call at a time per request, never after OnFinal or OnError (its last);
// implementations must not block.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void OnDelta(v1::GenerateDelta delta) = 0;
  virtual void OnFinal(v1::GenerateFinal final) = 0;
  virtual void OnError(absl::Status status) = 0;
};

class Router {
 public:
  // `tokenizer`, `hub`, `metrics` and `clock` must outlive the router.
  static absl::StatusOr<std::unique_ptr<Router>> Create(RouterOptions options,
                                                        const ModelConfig& config,
                                                        const Tokenizer& tokenizer,
                                                        WorkerHub* hub, RouterMetrics* metrics,
                                                        const Clock* clock);
  ~Router();

  // Queues a request whose output goes to `sink`; returns its id.
  // INVALID_ARGUMENT for a bad request, RESOURCE_EXHAUSTED when the queue is
  // full, UNAVAILABLE when no group is ready or the router is stopping.
  absl::StatusOr<uint64_t> Submit(const v1::GenerateRequest& request, RequestSink* sink);
  // Ends a request whose client went away (`code` CANCELLED or
  // DEADLINE_EXCEEDED): its blocks are freed now and its sink is never
  // called again once this returns.
  void Cancel(uint64_t id, absl::StatusCode code);
  // Stops admitting (new requests get UNAVAILABLE, ready() is false) and
  // waits up to `timeout` for open requests to finish; true if they all did.
  bool Drain(absl::Duration timeout);
  // Stops the step loops; every request still open ends with UNAVAILABLE.
  void Stop();

  // Whether some group is formed and the router admits requests.
  bool ready();
  v1::ModelInfo ModelInfo() const;
  v1::ServerStatus Status();

 private:
  // A request's streaming state.
  struct Stream {
    RequestSink* sink;
    std::unique_ptr<TextStream> text;
    absl::Time arrival;
    uint32_t group = 0;
    int64_t work = 0;  // prompt + max_tokens: its share of the group's outstanding work
    int requeues = 0;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    absl::Time first_scheduled = absl::InfiniteFuture();
    absl::Time first_token = absl::InfiniteFuture();
    uint32_t cached_tokens = 0;  // prompt tokens served by the prefix cache
    bool logprobs = false;
  };
  // One data-parallel worker group and its step loop.
  struct Group {
    uint32_t id = 0;
    std::unique_ptr<Scheduler> scheduler;  // once the group first formed
    bool complete = false;                 // formed and in service
    std::vector<uint64_t> pending_releases;
    int64_t outstanding = 0;  // sum of its requests' work
    int64_t cached_tokens = 0;  // the scheduler's count when last reported
    v1::Mode last_mode = v1::MODE_UNSPECIFIED;
    v1::ModeCounters modes;
    std::thread loop;
  };

  Router(RouterOptions options, const ModelConfig& config, const Tokenizer& tokenizer,
         WorkerHub* hub, RouterMetrics* metrics, const Clock* clock,
         std::unique_ptr<ShiftPolicy> policy);
  void Loop(Group* g);
  // One line of --step_trace.
  void TraceStep(uint32_t group, const ShiftDecision& decision, double seconds,
                 double rank_seconds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for the group's ranks; on first formation, sizes its scheduler.
  bool AwaitGroup(Group* g);
  absl::StatusOr<std::unique_ptr<Request>> Validate(const v1::GenerateRequest& request);
  // The complete group with the least outstanding work (null if none).
  Group* PickGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves every request of `from` (out of service) to other groups, or ends
  // it with UNAVAILABLE saying `why`.
  void Evacuate(Group* from, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Deliver(Group* g, const RequestUpdate& update, const v1::internal::SampledToken* sampled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a request's stream with an error (its scheduler entry is gone).
  void Fail(uint64_t id, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateLoad(const Group* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RouterOptions options_;
  const ModelConfig& config_;
  const Tokenizer& tokenizer_;
  WorkerHub* hub_;
  RouterMetrics* metrics_;
  const Clock* clock_;
  const absl::Time started_;

  absl::Mutex mu_;
  std::unique_ptr<ShiftPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::FILE* step_trace_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::unique_ptr<Group>> groups_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Stream> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shift
