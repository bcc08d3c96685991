// The router's output side (docs/architecture.md, Output): turns each
// request's token updates into text deltas (detokenizing, stop strings),
// logprobs, usage and latency metrics, and hands them to the request's sink.
// It runs on its own threads, one stream at a time per stream and never
// under the scheduler's lock, so a slow client or a long detokenization
// delays only its own stream, never the next step. A sink that reports
// itself full pauses its request; a request paused for too long is ended
// with RESOURCE_EXHAUSTED, so undelivered output per stream stays bounded.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/defaults.h"
#include "common/tokenizer.h"
#include "core/clock.h"
#include "core/scheduler.h"
#include "router/router_metrics.h"
#include "shift/v1/generation.pb.h"

namespace shift {

// Where a request's output goes. Called on an output thread, one call at a
// time per request, never after OnFinal or OnError (its last), and never
// again once Router::Cancel for it has returned. Implementations should not
// block: a slow sink holds up only its own request.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // False when the sink holds as much undelivered output as it should (its
  // client is not reading): the request pauses until the sink calls
  // Router::Resume, and ends with RESOURCE_EXHAUSTED if that takes too long.
  virtual bool OnDelta(v1::GenerateDelta delta) = 0;
  virtual void OnFinal(v1::GenerateFinal final) = 0;
  virtual void OnError(absl::Status status) = 0;
};

struct OutputOptions {
  int threads = defaults::kOutputThreads;
  // Updates a stream may have queued for its sink before its request
  // pauses (its sink is slower than the steps).
  int64_t max_pending = defaults::kMaxUndeliveredDeltas;
  // A request paused this long (its sink full) is ended.
  absl::Duration stalled_stream_timeout = absl::Seconds(defaults::kStalledStreamTimeoutSeconds);
};

class OutputProcessor {
 public:
  // What the output side asks of the router; called on output threads with
  // no lock of the processor held.
  struct Hooks {
    // The stream ended: its final or error went to the sink. `stopped`: a
    // stop string ended it, and its request must be finished (kStop).
    std::function<void(uint64_t id, bool stopped)> done;
    // The sink said it is full: pause the request (if IsPaused still holds).
    std::function<void(uint64_t id)> full;
    // The stream's queue, full when Push said so, has drained: unpause the
    // request (if IsPaused no longer holds).
    std::function<void(uint64_t id)> drained;
    // The request stayed paused past the timeout: end it.
    std::function<void(uint64_t id)> stalled;
  };

  // `tokenizer`, `metrics` and `clock` must outlive the processor.
  OutputProcessor(const Tokenizer& tokenizer, RouterMetrics* metrics, const Clock* clock,
                  OutputOptions options, Hooks hooks);
  // Delivers what is queued, then stops its threads.
  ~OutputProcessor();

  struct StreamSpec {
    RequestSink* sink = nullptr;
    absl::Time arrival;
    uint32_t prompt_tokens = 0;
    bool logprobs = false;
    std::vector<std::string> stop_strings;
    // The client's request_id, or one the router gave it; the group it was
    // queued on and that group's generation (its log lines' ids).
    std::string request_id;
    uint32_t group = 0;
    uint64_t generation = 0;
  };
  // A new request's stream; before any Push for it.
  void Open(uint64_t id, StreamSpec spec);
  // A step's updates (tokens, maybe the request's end), each queued in
  // order on its stream, under one lock; `group` at `generation` ran the
  // step. Returns the requests whose queue is now full: the caller pauses
  // them until `drained`.
  std::vector<uint64_t> Push(std::vector<RequestUpdate> updates, uint32_t group,
                             uint64_t generation);
  // Ends the stream with `status` after what was queued before.
  void Fail(uint64_t id, absl::Status status);
  // Drops the stream: once this returns its sink is never called again.
  void Close(uint64_t id);
  // The sink has room again.
  void Resumed(uint64_t id);
  bool IsPaused(uint64_t id);

 private:
  struct Item {
    RequestUpdate update;
    absl::Time at;       // when the step's tokens came
    absl::Status error;  // not OK: end the stream with it
    // The group and generation that ran the step (0: not from a step).
    uint32_t group = 0;
    uint64_t generation = 0;
  };
  struct Stream;

  // Queues `item` on `s`; true when `s` must go on ready_ (it was idle).
  bool Enqueue(Stream& s, Item item) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Work(bool watch_stalls);
  // Delivers `items` to the stream's sink; returns what the router must hear.
  struct Outcome {
    bool done = false, stopped = false, full = false;
  };
  Outcome Deliver(Stream& s, std::vector<Item>& items);

  const Tokenizer& tokenizer_;
  RouterMetrics* metrics_;
  const Clock* clock_;
  const OutputOptions options_;
  const Hooks hooks_;

  absl::Mutex mu_;
  std::map<uint64_t, std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Stream>> ready_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace shift
