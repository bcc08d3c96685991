// The router's core: owns every request from arrival to last token. It
// validates and tokenizes requests, queues them in the scheduler, and runs
// the step loop of its worker group: build a step, let the shift policy pick
// TP or SP, send the plan through the worker hub, apply the sampled tokens,
// and stream text back through each request's sink. If the group loses a
// rank or a step fails, running requests go back to the queue and resume
// (recomputed) when the group has re-formed: no request is lost.
#pragma once

#include <cstdint>
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
  uint32_t group = 0;
  uint32_t world_size = 1;
  // Limits; num_blocks is taken from the ranks (the smallest) when the group
  // forms, and block_size must match theirs.
  SchedulerConfig scheduler;
  std::string shift_policy = "threshold";
  int64_t shift_threshold = 256;
  int64_t max_queued_requests = 1024;
  absl::Duration step_timeout = absl::Seconds(120);
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
  // Stops the step loop; every request still open ends with UNAVAILABLE.
  void Stop();

  bool ready();
  v1::ModelInfo ModelInfo() const;
  v1::ServerStatus Status();

 private:
  // A request's streaming state.
  struct Stream {
    RequestSink* sink;
    std::unique_ptr<TextStream> text;
    absl::Time arrival;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    absl::Time first_scheduled = absl::InfiniteFuture();
    absl::Time first_token = absl::InfiniteFuture();
    bool logprobs = false;
  };

  Router(RouterOptions options, const ModelConfig& config, const Tokenizer& tokenizer,
         WorkerHub* hub, RouterMetrics* metrics, const Clock* clock,
         std::unique_ptr<ShiftPolicy> policy);
  void Loop();
  // Waits for the group's ranks; on first formation, sizes the scheduler.
  bool AwaitGroup();
  absl::StatusOr<std::unique_ptr<Request>> Validate(const v1::GenerateRequest& request);
  void Deliver(const RequestUpdate& update, const v1::internal::SampledToken* sampled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateLoad() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RouterOptions options_;
  const ModelConfig& config_;
  const Tokenizer& tokenizer_;
  WorkerHub* hub_;
  RouterMetrics* metrics_;
  const Clock* clock_;
  const absl::Time started_;

  absl::Mutex mu_;
  std::unique_ptr<ShiftPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Scheduler> scheduler_ ABSL_GUARDED_BY(mu_);  // once the group formed
  bool group_complete_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Stream> streams_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> pending_releases_ ABSL_GUARDED_BY(mu_);
  v1::Mode last_mode_ ABSL_GUARDED_BY(mu_) = v1::MODE_UNSPECIFIED;
  v1::ModeCounters modes_ ABSL_GUARDED_BY(mu_);
  std::thread loop_;
};

}  // namespace shift
