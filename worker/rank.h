// One worker rank's life: load the model, connect the control stream to the
// router, register, meet the group's other ranks through the rendezvous
// store under the generation the router gives, then execute step plans
// (diffs against the per-sequence state kept here) until told to stop.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/engine.h"

namespace shift {

struct RankOptions {
  std::string router;  // host:port
  uint32_t group = 0;
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::string model_dir;
  EngineOptions engine;
  // How long to wait for the other ranks at rendezvous.
  int64_t rendezvous_timeout_ms = 60000;
  // Where this rank serves gRPC health and Prometheus /metrics (0: any port)
  // and listens for its group's collectives.
  std::string host = "127.0.0.1";
  int health_port = 0;
  int metrics_port = 0;
};

// Returns OK after a Shutdown from the router; an error (with context) when
// loading, the rendezvous or the stream fails.
absl::Status RunRank(const RankOptions& options);

}  // namespace shift
