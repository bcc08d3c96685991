// shift-worker: one rank of a worker group. Loads the model, registers with
// the router, meets its group and executes the steps the router plans.
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "common/defaults.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "worker/engine_flags.h"
#include "worker/rank.h"

ABSL_FLAG(std::string, router, "127.0.0.1:50052",
          "The router's internal port (host:port), where ranks register");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed the router's certificate: TLS to the router's internal port");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate this rank presents to the router (mutual TLS), with --tls_key");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, internal_token_file, "",
          "File holding the router's internal token (the router's --internal_token_file), sent "
          "with every call to its internal port; empty: $HOME/.shift/internal_token, waited for "
          "while the router has not written it; none: no token (with mutual TLS only)");
ABSL_FLAG(uint32_t, group, 0, "Worker group index");
ABSL_FLAG(uint32_t, rank, 0, "Rank in the group, 0 .. world_size-1");
ABSL_FLAG(uint32_t, world_size, 1, "Ranks in the group (1, 2, 4 or 8)");
ABSL_FLAG(uint32_t, sp_degree, 0,
          "The group's base-mode Ulysses degree k, as the router's --sp_degree: this rank loads "
          "its 1/(world_size / k) shard of the weights (0: world_size, the whole model)");
ABSL_FLAG(std::string, model, "", "Model directory in the Hugging Face layout (required)");
ABSL_FLAG(std::string, model_name, "",
          "The model's name on this rank's metrics (model_name), as the router's --model_name "
          "(default: the model directory's name)");
ABSL_FLAG(int64_t, kv_cache_bytes, shift::defaults::kKvCacheBytes,
          "Bytes for this rank's KV cache (all layers)");
ABSL_FLAG(int64_t, block_size, shift::defaults::kBlockSize, "Tokens per KV block");
ABSL_FLAG(std::string, device, shift::defaults::kDevice,
          "Compute device: cpu (the deterministic fp32 reference) or cuda (bf16 on a GPU, in "
          "builds with the CUDA backend)");
ABSL_FLAG(int32_t, threads, shift::defaults::kThreads,
          "Compute threads (results do not depend on it)");
ABSL_FLAG(int64_t, rendezvous_timeout_ms, shift::defaults::kRendezvousTimeoutMs,
          "How long to wait for the group's other ranks");
ABSL_FLAG(double, reconnect_timeout_s, shift::defaults::kReconnectTimeoutSeconds,
          "How long to keep trying to reach the router (at start, after losing it, or after it "
          "left to restart) before exiting; the weights stay loaded meanwhile. 0: no limit, the "
          "rank waits until its own SIGTERM");
ABSL_FLAG(std::optional<bool>, deterministic, std::nullopt,
          "Bitwise-identical results in every mode and batch (docs/architecture.md, "
          "Determinism): a CPU promise, always on with --device=cpu and refused with "
          "--device=cuda (unset: the device's only mode)");
ABSL_FLAG(int32_t, cuda_device, -1,
          "With --device=cuda: the GPU this rank uses (-1: the rank index modulo the GPUs)");
ABSL_FLAG(bool, cuda_graphs_with_collectives, false,
          "With --device=cuda in a group using NCCL: replay whole decode steps from CUDA graphs "
          "with the collectives recorded inside (not yet run on several GPUs; off: groups of "
          "several ranks run every step eagerly)");
ABSL_FLAG(std::string, collectives, "auto",
          "With --device=cuda and several ranks: how the group exchanges device buffers: nccl, "
          "staged (through host memory and Gloo, for ranks sharing a GPU), or auto (nccl unless "
          "two ranks share a GPU); every rank of a group must say the same");
ABSL_FLAG(int32_t, emulate_world_size, 1,
          "Run rank 0's share of each step of a group of this many ranks alone, collectives "
          "replaced by device copies of their size timed apart: what one rank of a larger group "
          "computes, on one GPU (the router sees a group of one: --world_size=1; tokens are "
          "stand-ins). shift-generate --emulate_rank measures the other ranks");
ABSL_FLAG(std::string, compute_profile, "",
          "Append a JSON line per step here: its mode and shape, the rank's step seconds, the "
          "collectives' seconds and bytes, compute = step - collectives, GEMM FLOPs (shift-sim "
          "reads it)");
ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address this rank binds and advertises (health, /metrics, and collectives unless "
          "--collective_host is set)");
ABSL_FLAG(std::string, collective_host, "",
          "Address this rank's Gloo collectives bind and advertise to its group (a network of "
          "their own); empty: --host");
ABSL_FLAG(int32_t, port, 0, "gRPC health port (0: any free port, reported at registration)");
ABSL_FLAG(int32_t, metrics_port, 0, "Prometheus /metrics port (0: any free port)");
ABSL_FLAG(std::string, log_format, "text",
          "Log lines as text or json (one object a line: ts, level, component, msg, fields); "
          "gRPC's own lines too");
ABSL_FLAG(std::string, log_level, "info", "Lowest level logged: debug, info, warning or error");

int main(int argc, char** argv) {
  // SIGTERM and SIGINT end a rank (the router only ever asks it to come
  // back): one thread takes them, says so and exits 0, whatever the rank is
  // doing (its state lives on the router; a step in flight is re-run).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals] {
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) return;
    shift::Log(shift::LogLevel::kInfo, "worker", "stopping on a signal",
               {{"event", "rank_stopping"}, {"signal", signal == SIGTERM ? "SIGTERM" : "SIGINT"}});
    std::fflush(nullptr);
    _exit(0);
  }).detach();
  shift::InitProgram(argc, argv,
                     "Runs one rank of a worker group: loads the model, registers with the "
                     "router and executes its step plans in TP or SP mode.",
                     "shift-worker --router=HOST:PORT --rank=R --world_size=P --model=DIR");
  if (const absl::Status logging =
          shift::ConfigureLogging(absl::GetFlag(FLAGS_log_format), absl::GetFlag(FLAGS_log_level));
      !logging.ok()) {
    return shift::ReportFailure(logging);
  }
  shift::RouteGrpcLogs();
  shift::RaiseOpenFileLimit();
  shift::RankOptions options;
  options.router = absl::GetFlag(FLAGS_router);
  options.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                 absl::GetFlag(FLAGS_tls_ca)};
  options.internal_token_file = absl::GetFlag(FLAGS_internal_token_file);
  options.group = absl::GetFlag(FLAGS_group);
  options.rank = absl::GetFlag(FLAGS_rank);
  options.world_size = absl::GetFlag(FLAGS_world_size);
  options.engine.sp_degree = static_cast<int>(absl::GetFlag(FLAGS_sp_degree));
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.model_name = absl::GetFlag(FLAGS_model_name);
  options.engine.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  options.engine.block_size = absl::GetFlag(FLAGS_block_size);
  options.engine.threads = absl::GetFlag(FLAGS_threads);
  auto device = shift::kernels::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return shift::ReportFailure(device.status());
  options.engine.device = *device;
  options.rendezvous_timeout_ms = absl::GetFlag(FLAGS_rendezvous_timeout_ms);
  options.reconnect_timeout = absl::Seconds(absl::GetFlag(FLAGS_reconnect_timeout_s));
  options.deterministic = absl::GetFlag(FLAGS_deterministic)
                              .value_or(options.engine.device == shift::kernels::Device::kCpu);
  options.engine.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  ApplyEngineFlags(&options.engine);
  options.engine.graphs_with_collectives = absl::GetFlag(FLAGS_cuda_graphs_with_collectives);
  auto collectives = shift::ParseDeviceCollectives(absl::GetFlag(FLAGS_collectives));
  if (!collectives.ok()) return shift::ReportFailure(collectives.status());
  options.collectives = *collectives;
  options.host = absl::GetFlag(FLAGS_host);
  options.collective_host = absl::GetFlag(FLAGS_collective_host);
  options.health_port = absl::GetFlag(FLAGS_port);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (options.model_dir.empty()) {
    return shift::ReportFailure(absl::InvalidArgumentError("--model is required"));
  }
  if (options.rank >= options.world_size) {
    return shift::ReportFailure(absl::InvalidArgumentError("--rank must be below --world_size"));
  }
  options.emulate_world_size = absl::GetFlag(FLAGS_emulate_world_size);
  options.compute_profile = absl::GetFlag(FLAGS_compute_profile);
  if (options.emulate_world_size < 1 ||
      (options.emulate_world_size > 1 && options.world_size != 1)) {
    return shift::ReportFailure(absl::InvalidArgumentError(
        "--emulate_world_size emulates a whole group in one rank: it needs --world_size=1 (and "
        "is at least 1)"));
  }
  absl::Status status = shift::RunRank(options);
  if (!status.ok()) return shift::ReportFailure(status);
  return 0;
}
