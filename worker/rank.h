// One worker rank's life: load the model and allocate the KV cache, connect
// the control stream to the router and register, then follow the router:
// each Welcome with a new generation drops the old communicator and the
// per-sequence state and meets the group's other ranks again through the
// rendezvous store; each plan (a diff against the per-sequence state kept
// here) is executed and answered. Heartbeats flow all the while. A failed
// step is reported and the rank waits for the group to re-form; it exits
// only on Shutdown or when the control stream is lost.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/defaults.h"
#include "common/security.h"
#include "worker/device_collectives.h"
#include "worker/engine.h"

namespace shift {

struct RankOptions {
  std::string router;  // the router's internal port, host:port
  // TLS to the router's internal port: its CA, and this rank's certificate
  // and key when the router asks for one (mutual TLS).
  TlsFiles tls;
  // The internal port's token file (common/security.h); "" is
  // $HOME/.shift/internal_token, "none" sends none (mutual TLS only;
  // InternalTokenPath).
  std::string internal_token_file;
  uint32_t group = 0;
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::string model_dir;
  // The served model's name on this rank's metrics (model_name), as the
  // router's --model_name; empty: model_dir's base name.
  std::string model_name;
  EngineOptions engine;
  // How long to wait for the other ranks at rendezvous.
  int64_t rendezvous_timeout_ms = defaults::kRendezvousTimeoutMs;
  // How long to keep trying to (re)connect while no router answers.
  absl::Duration reconnect_timeout = absl::Seconds(defaults::kReconnectTimeoutSeconds);
  // Emulate rank 0 of a group of `emulate_world_size` alone
  // (worker/emulated_communicator.h): the router sees a group of one
  // (world_size must be 1), the engine runs that rank's share of each step
  // with collectives as timed device copies. Tokens are stand-ins.
  int emulate_world_size = 1;
  // Where to append a compute-profile line per step (worker/compute_profile.h).
  std::string compute_profile;
  // How a group of CUDA ranks exchanges device buffers
  // (worker/device_collectives.h): NCCL unless ranks share a GPU.
  DeviceCollectives collectives = DeviceCollectives::kAuto;
  // Deterministic mode (docs/architecture.md, Determinism): the CPU engine's
  // only mode (false is refused there), refused on CUDA.
  bool deterministic = true;
  // Where this rank serves gRPC health and Prometheus /metrics (0: any port)
  // and listens for its group's collectives (on `collective_host` instead
  // when it is set: a network of their own).
  std::string host = "127.0.0.1";
  std::string collective_host;
  int health_port = 0;
  int metrics_port = 0;
};

// Returns OK after a Shutdown from the router; an error (with context) when
// loading fails, the router refuses the rank, or no router answers for
// `reconnect_timeout`. A lost router is reconnected to, weights kept.
absl::Status RunRank(const RankOptions& options);

}  // namespace shift
