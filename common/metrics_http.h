// The HTTP server behind /metrics (prometheus-cpp's civetweb), set up the
// same way on the router and on every rank: enough threads that a few idle
// or slow clients do not hold up a scrape, and a per-connection timeout so
// that a connection which sends nothing is closed instead of holding a
// thread for civetweb's default 30 s. Every endpoint also serves the
// process's own series (common/process_metrics.h). Header-only: for targets
// that link prometheus-cpp.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/process_metrics.h"
#include "prometheus/exposer.h"

namespace shift {

inline constexpr int kMetricsThreads = 8;
inline constexpr int kMetricsRequestTimeoutMs = 2000;

// Serves on `bind` ("127.0.0.1:0" picks a port); the process series carry
// `labels`.
inline absl::StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    const std::string& bind, const prometheus::Labels& labels = {}) {
  // The exposer keeps a weak reference: each collector lives as long as the
  // process (one per exposer; a process makes one or two).
  static absl::Mutex mu;
  static auto* collectors = new std::vector<std::shared_ptr<ProcessCollector>>();
  std::shared_ptr<ProcessCollector> process = std::make_shared<ProcessCollector>(labels);
  {
    absl::MutexLock lock(&mu);
    collectors->push_back(process);
  }
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", bind, "num_threads", std::to_string(kMetricsThreads),
        "request_timeout_ms", std::to_string(kMetricsRequestTimeoutMs)});
    exposer->RegisterCollectable(process);
    return exposer;
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", bind, ": ", e.what()));
  }
}

}  // namespace shift
