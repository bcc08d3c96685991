// Where requests are tokenized: threads of their own, never gRPC's callback
// threads. Tokenizing is the one slow part of admitting a request (seconds
// for MiBs of text), and gRPC's callback threads also carry the workers'
// heartbeats and control streams, so on them a few large prompts could
// delay heartbeats until the group re-formed. Bounded in what waits: in all,
// and per client.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace shift {

class AdmissionPool {
 public:
  // `threads` workers; at most `max_waiting` tasks queued or running, at
  // most `per_client` of them for one client.
  AdmissionPool(int threads, int64_t max_waiting, int64_t per_client);
  // Runs every task still queued, then joins the threads.
  ~AdmissionPool();
  AdmissionPool(const AdmissionPool&) = delete;
  AdmissionPool& operator=(const AdmissionPool&) = delete;

  // Queues `task` for `client` (a tenant, or a peer address).
  // ResourceExhausted when a bound is reached; `task` then never runs.
  absl::Status Add(const std::string& client, std::function<void()> task);

 private:
  void Run();

  const int64_t max_waiting_;
  const int64_t per_client_;
  absl::Mutex mu_;
  std::deque<std::pair<std::string, std::function<void()>>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int64_t> counts_ ABSL_GUARDED_BY(mu_);  // queued or running
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// The router's two lanes, shared by its gRPC and HTTP fronts (their bounds
// are the router's, whichever way requests come): text prompts of
// defaults::kLargePromptBytes or more in a lane of their own, so that large
// prompts never delay small ones.
class AdmissionLanes {
 public:
  AdmissionLanes();
  AdmissionPool* For(int64_t text_bytes) {
    return text_bytes >= large_bytes_ ? large_.get() : small_.get();
  }

 private:
  const int64_t large_bytes_;
  std::unique_ptr<AdmissionPool> small_, large_;
};

}  // namespace shift
