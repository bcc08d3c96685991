#include "worker/rank.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/fingerprint.h"
#include "common/log.h"
#include "common/status.h"
#include "kernels/backends.h"
#include "worker/compute_profile.h"
#include "worker/emulated_communicator.h"
#include "worker/gloo_communicator.h"
#include "worker/plan_steps.h"
#include "worker/rendezvous_store.h"
#include "worker/sequence_table.h"
#include "worker/worker_metrics.h"

namespace shift {
namespace {

// The health service name a liveness probe checks (deploy/k8s uses it).
constexpr char kLivenessService[] = "shift.live";

namespace rpc = v1::internal;
using Stream = grpc::ClientReaderWriter<rpc::WorkerMessage, rpc::RouterMessage>;

void SetWeightsReport(const WeightsReport& report, rpc::WeightsReport* out) {
  out->set_config_digest(report.config_digest);
  out->set_headers_digest(report.headers_digest);
  out->set_piece_bytes(report.piece_bytes);
  for (const auto& [name, tensor] : report.tensors) {
    rpc::TensorPieces* pieces = out->add_tensors();
    pieces->set_name(name);
    pieces->set_nbytes(tensor.nbytes);
    for (const auto& [index, digest] : tensor.pieces) {
      pieces->add_index(index);
      pieces->add_digest(digest);
    }
  }
}

// The rank's side of the control stream: the main thread reads, and both it
// and the heartbeat thread write, one write at a time.
class ControlStream {
 public:
  explicit ControlStream(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}
  ~ControlStream() { StopHeartbeats(); }

  bool Read(rpc::RouterMessage* message) { return stream_->Read(message); }
  bool Write(const rpc::WorkerMessage& message) {
    absl::MutexLock lock(&write_mu_);
    return stream_->Write(message);
  }
  void WritesDone() {
    absl::MutexLock lock(&write_mu_);
    stream_->WritesDone();
  }
  grpc::Status Finish() { return stream_->Finish(); }

  // Sends a Heartbeat every interval until stopped; the interval can change.
  void StartHeartbeats(absl::Duration interval) {
    SetHeartbeatInterval(interval);
    heartbeats_ = std::thread([this] {
      absl::MutexLock lock(&mu_);
      while (!stop_) {
        const absl::Duration interval = interval_;
        auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
        if (mu_.AwaitWithTimeout(absl::Condition(&stop), interval)) break;
        rpc::WorkerMessage beat;
        beat.mutable_heartbeat()->set_last_step_id(last_step_id_);
        mu_.Unlock();
        const bool ok = Write(beat);
        mu_.Lock();
        if (!ok) break;
      }
    });
  }
  void SetHeartbeatInterval(absl::Duration interval) {
    absl::MutexLock lock(&mu_);
    if (interval > absl::ZeroDuration()) interval_ = interval;
  }
  void SetLastStep(uint64_t step_id) {
    absl::MutexLock lock(&mu_);
    last_step_id_ = step_id;
  }
  void StopHeartbeats() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (heartbeats_.joinable()) heartbeats_.join();
  }

 private:
  std::unique_ptr<Stream> stream_;
  absl::Mutex write_mu_;
  absl::Mutex mu_;
  absl::Duration interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  uint64_t last_step_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread heartbeats_;
};

void Log(const RankOptions& options, const std::string& what, LogLevel level = LogLevel::kInfo) {
  shift::Log(
      level, "worker", what,
      {{"group", options.group}, {"rank", options.rank}, {"world_size", options.world_size}});
}

// The rank's state between control messages.
class RankLoop {
 public:
  // `emulated` (not owned; may be null) is the communicator of an emulated
  // rank; `profile` (may be null) receives a compute-profile line per step.
  RankLoop(const RankOptions& options, std::shared_ptr<grpc::Channel> channel, Engine* engine,
           WorkerMetrics* metrics, grpc::HealthCheckServiceInterface* health,
           Communicator* emulated, std::FILE* profile)
      : options_(options),
        channel_(std::move(channel)),
        engine_(engine),
        metrics_(metrics),
        health_(health),
        emulated_(emulated),
        profile_(profile) {}

  // A (new) generation: forget everything of the old one and meet the group
  // through the rendezvous with `ticket`. What came of it: OK, or why the
  // communicators did not form (the router is told either way).
  const absl::Status& Form(uint64_t generation, const std::string& ticket) {
    health_->SetServingStatus("", false);
    engine_->Attach(nullptr).IgnoreError();
    comm_.reset();
    sequences_.Clear();
    generation_ = generation;
    formed_ = absl::OkStatus();
    if (options_.world_size > 1) {
      GrpcRendezvousStore store(channel_, options_.group, generation,
                                std::chrono::milliseconds(options_.rendezvous_timeout_ms), ticket);
      auto comm = GlooCommunicator::Connect(
          store, "comm", static_cast<int>(options_.rank), static_cast<int>(options_.world_size),
          options_.collective_host.empty() ? options_.host : options_.collective_host,
          std::chrono::milliseconds(options_.rendezvous_timeout_ms));
      if (comm.ok()) {
        comm_ = *std::move(comm);
        if (engine_->backend().device() != kernels::Device::kCpu) {
          // Device buffers: NCCL, or host-staged when ranks share a GPU.
          DeviceGroupOptions device;
          device.rank = static_cast<int>(options_.rank);
          device.size = static_cast<int>(options_.world_size);
          device.requested = options_.collectives;
          device.device_uuid = engine_->backend().device_uuid();
          DeviceCollectives chosen = DeviceCollectives::kAuto;
          auto on_device = FormDeviceCommunicator(store, device, std::move(comm_),
                                                  engine_->mutable_backend(), &chosen);
          if (on_device.ok()) {
            comm_ = *std::move(on_device);
            Log(options_, absl::StrCat("collectives: ", DeviceCollectivesName(chosen)));
          } else {
            formed_ = on_device.status();
          }
        }
        if (formed_.ok()) formed_ = engine_->Attach(comm_.get());
      } else {
        formed_ = comm.status();
      }
    }
    if (emulated_ != nullptr) formed_ = engine_->Attach(emulated_);
    if (formed_.ok()) {
      Log(options_, absl::StrCat("group formed under generation ", generation));
      health_->SetServingStatus("", true);
    } else {
      Log(options_, absl::StrCat("generation ", generation, " did not form: ", formed_.message(),
                                 "; waiting for the router"));
    }
    return formed_;
  }

  rpc::WorkerMessage Execute(const rpc::StepPlan& plan) {
    rpc::WorkerMessage reply;
    rpc::StepResult* result = reply.mutable_result();
    result->set_step_id(plan.step_id());
    result->set_rank(options_.rank);
    if (plan.generation() != generation_) {
      result->set_error(absl::StrCat("plan of generation ", plan.generation(), " but rank ",
                                     options_.rank, " is at generation ", generation_));
      return reply;
    }
    if (!formed_.ok()) {
      result->set_error(absl::StrCat("generation ", generation_, " is not formed on rank ",
                                     options_.rank, ": ", formed_.message()));
      return reply;
    }
    const std::vector<SequenceStep> batch = PlanSteps(plan, &sequences_);
    // The group's collectives, or an emulated rank's stand-in copies.
    const Communicator* comm = comm_ ? comm_.get() : emulated_;
    const uint64_t sent_before = comm ? comm->bytes_sent() : 0;
    const uint64_t received_before = comm ? comm->bytes_received() : 0;
    const double comm_before = comm ? comm->seconds() : 0.0;
    const uint64_t flops_before = engine_->gemm_flops();
    const StepMode mode =
        plan.mode() == v1::MODE_SP ? StepMode::kSequenceParallel : StepMode::kTensorParallel;
    const auto start = std::chrono::steady_clock::now();
    auto out = engine_->Step(batch, mode);
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double comm_seconds = comm ? comm->seconds() - comm_before : 0.0;
    rpc::StepTimings* timings = result->mutable_timings();
    timings->set_compute_seconds(total - comm_seconds);
    timings->set_comm_seconds(comm_seconds);
    if (comm) {
      timings->set_bytes_sent(comm->bytes_sent() - sent_before);
      timings->set_bytes_received(comm->bytes_received() - received_before);
    }
    if (profile_ != nullptr && out.ok()) {
      ComputeProfileLine line;
      line.world_size = engine_->world_size();
      line.rank = engine_->rank();
      line.mode = mode;
      line.shape = ShapeOfBatch(batch);
      line.step_s = total;
      line.collective_s = comm_seconds;
      line.collective_bytes = timings->bytes_received();
      line.gemm_flops = engine_->gemm_flops() - flops_before;
      std::fputs(FormatComputeProfileLine(line).c_str(), profile_);
      std::fflush(profile_);
    }
    double tokens = 0;
    for (const SequenceStep& s : batch) tokens += static_cast<double>(s.token_ids.size());
    metrics_->RecordStep(plan.mode() == v1::MODE_SP, tokens, timings->compute_seconds(),
                         comm_seconds, static_cast<double>(timings->bytes_sent()));
    metrics_->RecordOps(engine_->backend());
    metrics_->RecordCollectives(*engine_);
    if (!out.ok()) {
      // The communicator is broken after a failure; the router re-forms the
      // group, and until then every plan is answered with this error.
      Log(options_, absl::StrCat("step ", plan.step_id(), " failed: ", out.status().message()));
      result->set_error(std::string(out.status().message()));
      if (comm_ && absl::IsUnavailable(out.status())) {
        formed_ = out.status();
        health_->SetServingStatus("", false);
      }
      return reply;
    }
    for (const EngineSample& t : *out) {
      rpc::SampledToken* sampled = result->add_sampled();
      sampled->set_seq_id(t.seq_id);
      sampled->set_token_id(t.token_id);
      sampled->set_logprob(t.logprob);
      for (const auto& [id, logprob] : t.top) {
        v1::TopLogprob* top = sampled->add_top();
        top->set_token_id(id);
        top->set_logprob(logprob);
      }
      sampled->mutable_logits()->Add(t.logits.begin(), t.logits.end());
    }
    return reply;
  }

 private:
  const RankOptions& options_;
  std::shared_ptr<grpc::Channel> channel_;
  Engine* engine_;
  WorkerMetrics* metrics_;
  grpc::HealthCheckServiceInterface* health_;
  uint64_t generation_ = 0;
  absl::Status formed_ = absl::FailedPreconditionError("the group has not formed yet");
  std::unique_ptr<Communicator> comm_;
  Communicator* emulated_;
  std::FILE* profile_;
  SequenceTable sequences_;
};

// How a status of ServeRouter begins when the rank never got through.
constexpr absl::string_view kNotConnected = "not connected";

// Why the router could not be reached, for the log: gRPC's reason, and with
// TLS the likely cause, since a refused certificate shows on this side only
// as a failed handshake or a closed connection.
absl::Status NotConnected(const RankOptions& options, const grpc::Status& finish) {
  if (finish.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return absl::UnauthenticatedError(absl::StrCat("the router at ", options.router,
                                                   " refused this rank: ", finish.error_message()));
  }
  std::string why = absl::StrCat(kNotConnected, ": cannot reach the router at ", options.router,
                                 ": ", finish.error_message());
  if (!options.tls.cert.empty() || !options.tls.ca.empty()) {
    absl::StrAppend(&why,
                    " (with TLS: the router must trust this rank's --tls_cert, which its --tls_ca "
                    "must have signed, and this rank's --tls_ca must have signed the router's)");
  }
  return absl::UnavailableError(why);
}

// The internal token this rank sends ("" for none), read from its file; a
// rank on the router's machine may start first, so a file not yet written
// is waited for (within --reconnect_timeout_s when set).
absl::StatusOr<std::string> WaitForInternalToken(const RankOptions& options) {
  SHIFT_ASSIGN_OR_RETURN(const std::string path, InternalTokenPath(options.internal_token_file));
  if (path.empty()) {
    if (options.tls.cert.empty()) {
      return absl::InvalidArgumentError(
          "--internal_token_file=none needs mutual TLS (--tls_cert, --tls_key, --tls_ca): the "
          "router authenticates its ranks by one or the other");
    }
    return std::string();
  }
  const absl::Time start = absl::Now();
  bool said = false;
  while (true) {
    absl::StatusOr<std::string> token = ReadInternalToken(path);
    if (!absl::IsNotFound(token.status())) return token;
    if (options.reconnect_timeout > absl::ZeroDuration() &&
        absl::Now() - start > options.reconnect_timeout) {
      return absl::NotFoundError(absl::StrCat("no internal token at ", path, " after ",
                                              absl::FormatDuration(options.reconnect_timeout),
                                              " (the router writes it when it starts)"));
    }
    if (!said) {
      Log(options, absl::StrCat("waiting for the internal token at ", path,
                                " (the router writes it when it starts)"));
      said = true;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

// One connection to the router: register, then follow it until Shutdown
// (OK), a refusal (FAILED_PRECONDITION) or the stream's loss (UNAVAILABLE;
// starting with kNotConnected when it never got through; a Shutdown that
// asks the rank to come back is a loss). `last_generation`: the generation
// the rank last formed under, sent with the registration and kept up.
absl::Status ServeRouter(const RankOptions& options, rpc::WorkerMessage hello,
                         std::shared_ptr<grpc::Channel> channel, rpc::Worker::Stub& stub,
                         Engine* engine, WorkerMetrics* metrics,
                         grpc::HealthCheckServiceInterface* health, Communicator* emulated,
                         std::FILE* profile, uint64_t* last_generation) {
  grpc::ClientContext ctx;
  ControlStream stream(stub.Connect(&ctx));
  hello.mutable_register_()->set_last_generation(*last_generation);
  if (!stream.Write(hello)) return NotConnected(options, stream.Finish());
  stream.StartHeartbeats(absl::Seconds(1));
  RankLoop loop(options, std::move(channel), engine, metrics, health, emulated, profile);
  rpc::RouterMessage message;
  bool welcomed = false;
  // When this rank last sent a step's result (none since forming: epoch).
  std::chrono::steady_clock::time_point result_sent{};
  while (stream.Read(&message)) {
    if (message.has_shutdown()) {
      stream.StopHeartbeats();
      stream.WritesDone();
      if (message.shutdown().reconnect()) {
        // The router restarts (a rollout): keep the weights, come back.
        ctx.TryCancel();
        stream.Finish();
        return absl::UnavailableError(absl::StrCat("the router at ", options.router,
                                                   " left to restart (",
                                                   message.shutdown().reason(), ")"));
      }
      Log(options, absl::StrCat("shutting down: ", message.shutdown().reason()));
      return absl::OkStatus();
    }
    if (message.has_welcome()) {
      const rpc::Welcome& welcome = message.welcome();
      if (!welcomed) {
        Log(options, absl::StrCat("registered with ", options.router, " (", engine->num_blocks(),
                                  " KV blocks)"));
        welcomed = true;
      }
      stream.SetHeartbeatInterval(absl::Seconds(welcome.heartbeat_interval_seconds()));
      // Generation 0 acknowledges the registration while ranks are missing.
      if (welcome.generation() != 0) {
        const absl::Status& formed = loop.Form(welcome.generation(), welcome.rendezvous_ticket());
        *last_generation = welcome.generation();
        result_sent = {};
        // The router puts the group in service once every rank said so.
        rpc::WorkerMessage report;
        report.mutable_formed()->set_generation(welcome.generation());
        report.mutable_formed()->set_error(std::string(formed.message()));
        if (!stream.Write(report)) break;
      }
      continue;
    }
    if (!message.has_plan()) continue;
    // The wait since this rank's last result, when the router planned this
    // step straight after it (requests waiting): its turn-around.
    if (message.plan().follows_previous() &&
        result_sent != std::chrono::steady_clock::time_point{}) {
      metrics->StepGap(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - result_sent).count());
    }
    const rpc::WorkerMessage reply = loop.Execute(message.plan());
    stream.SetLastStep(message.plan().step_id());
    if (!stream.Write(reply)) break;
    result_sent = std::chrono::steady_clock::now();
  }
  stream.StopHeartbeats();
  const grpc::Status finish = stream.Finish();
  if (finish.error_code() == grpc::StatusCode::UNAUTHENTICATED)
    return NotConnected(options, finish);
  if (finish.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the router at ", options.router, " refused this rank: ", finish.error_message()));
  }
  if (!welcomed) return NotConnected(options, finish);
  return absl::UnavailableError(
      absl::StrCat("lost the router at ", options.router, ": ", finish.error_message()));
}

}  // namespace

absl::Status RunRank(const RankOptions& options) {
  const bool cpu = options.engine.device == kernels::Device::kCpu;
  if (cpu && !options.deterministic) {
    return absl::InvalidArgumentError(
        "the CPU engine is always deterministic (--deterministic=false is for GPU ranks)");
  }
  if (!cpu && options.deterministic) {
    return absl::InvalidArgumentError(
        "--deterministic is a CPU promise (docs/architecture.md, Determinism): on --device=cuda a "
        "step is reproducible run to run, not bit for bit across modes");
  }
  // Health (NOT_SERVING until the group is formed) and /metrics come first,
  // so an orchestrator sees the rank while it loads.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder health_builder;
  // gRPC starts no server without a service of its own; this one answers
  // UNIMPLEMENTED to anything but health.
  grpc::CallbackGenericService no_other_methods;
  health_builder.RegisterCallbackGenericService(&no_other_methods);
  int health_port = 0;
  health_builder.AddListeningPort(absl::StrCat(options.host, ":", options.health_port),
                                  grpc::InsecureServerCredentials(), &health_port);
  std::unique_ptr<grpc::Server> health_server = health_builder.BuildAndStart();
  if (health_server == nullptr || health_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve health on ", options.host, ":", options.health_port));
  }
  // Two names: "" (and readiness) is SERVING while the rank is in a formed
  // group; "shift.live" while the process runs, so a liveness probe does
  // not restart a rank that is loading or waiting for its group.
  grpc::HealthCheckServiceInterface* health = health_server->GetHealthCheckService();
  health->SetServingStatus("", false);
  health->SetServingStatus(kLivenessService, true);
  SHIFT_ASSIGN_OR_RETURN(
      std::unique_ptr<WorkerMetrics> metrics,
      WorkerMetrics::Serve(
          absl::StrCat(options.host, ":", options.metrics_port),
          {{"model_name",
            options.model_name.empty() ? DirectoryBaseName(options.model_dir) : options.model_name},
           {"group", absl::StrCat(options.group)},
           {"rank", absl::StrCat(options.rank)}}));

  // Weights loaded and the KV cache allocated before registering: the
  // registration is the rank's ready handshake.
  SHIFT_ASSIGN_OR_RETURN(ModelFiles files, OpenModelFiles(options.model_dir));
  // The weights are digested as the engine reads them: one read.
  SHIFT_ASSIGN_OR_RETURN(const uint64_t config_digest, ConfigDigestOf(options.model_dir));
  WeightsDigester digester(config_digest, *files.checkpoint);
  files.checkpoint->set_observer(&digester);
  EngineOptions engine_options = options.engine;
  engine_options.rank = static_cast<int>(options.rank);
  engine_options.world_size = static_cast<int>(options.world_size);
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EmulatedCommunicator> emulated;
  if (options.emulate_world_size > 1) {
    // One rank of a larger group, alone: its engine is that rank's.
    kernels::BackendOptions backend_options;
    backend_options.threads = options.engine.threads;
    backend_options.cuda_device = std::max(0, options.engine.cuda_device);
    backend_options.fp8_gemm = options.engine.fp8_gemm;
    SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend,
                           kernels::CreateBackend(options.engine.device, backend_options));
    emulated = std::make_unique<EmulatedCommunicator>(0, options.emulate_world_size, backend.get());
    SHIFT_ASSIGN_OR_RETURN(
        engine, Engine::Create(files, engine_options, emulated.get(), std::move(backend)));
  } else {
    SHIFT_ASSIGN_OR_RETURN(engine, Engine::Create(files, engine_options));
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> profile(nullptr, &std::fclose);
  if (!options.compute_profile.empty()) {
    profile.reset(std::fopen(options.compute_profile.c_str(), "a"));
    if (profile == nullptr) {
      return absl::UnavailableError(absl::StrCat("cannot open ", options.compute_profile));
    }
  }
  metrics->SetModel(static_cast<double>(engine->weight_bytes()),
                    static_cast<double>(engine->fp8_weight_bytes()),
                    static_cast<double>(engine->num_blocks()));

  rpc::WorkerMessage hello;
  rpc::Register* reg = hello.mutable_register_();
  reg->set_group(options.group);
  reg->set_rank(options.rank);
  reg->set_world_size(options.world_size);
  // An emulated rank is a group of one to the router.
  reg->set_sp_degree(
      options.emulate_world_size > 1 ? 1 : static_cast<uint32_t>(engine_options.layout().sp));
  reg->set_kv_blocks(static_cast<uint32_t>(engine->num_blocks()));
  reg->set_block_size(static_cast<uint32_t>(options.engine.block_size));
  reg->set_device(engine->backend().description());
  reg->set_deterministic(options.deterministic);
  reg->set_weight_bytes(engine->weight_bytes());
  files.checkpoint->set_observer(nullptr);
  SetWeightsReport(digester.Report(), reg->mutable_weights());
  reg->set_address(absl::StrCat(options.host, ":", health_port));
  reg->set_metrics_address(absl::StrCat(options.host, ":", metrics->port()));

  // The weights stay loaded while the router is away (lost, or restarting):
  // the rank reconnects until it is back, or until --reconnect_timeout_s
  // without one (0: no limit).
  grpc::ChannelArguments args;
  // gRPC's default reconnect backoff grows to two minutes; a rank should
  // find a restarted router within a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  SHIFT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                         ChannelCredentials(options.tls));
  SHIFT_ASSIGN_OR_RETURN(const std::string token, WaitForInternalToken(options));
  auto channel = InternalChannel(options.router, credentials, args, token);
  auto stub = rpc::Worker::NewStub(channel);
  absl::Time lost = absl::Now();
  std::string last_reason;
  uint64_t last_generation = 0;
  while (true) {
    absl::Status served = ServeRouter(options, hello, channel, *stub, engine.get(), metrics.get(),
                                      health, emulated.get(), profile.get(), &last_generation);
    if (served.ok() || absl::IsFailedPrecondition(served) || absl::IsUnauthenticated(served)) {
      return served;
    }
    const bool connected = !absl::StartsWith(served.message(), kNotConnected);
    if (connected) lost = absl::Now();
    // A zero timeout waits for the router until the rank's own signal.
    if (options.reconnect_timeout > absl::ZeroDuration() &&
        absl::Now() - lost > options.reconnect_timeout) {
      return absl::UnavailableError(absl::StrCat(served.message(), "; no router for ",
                                                 absl::FormatDuration(options.reconnect_timeout)));
    }
    // Said once, and again whenever the reason changes.
    if (connected || served.message() != last_reason) {
      Log(options, absl::StrCat(served.message(), "; reconnecting"));
      last_reason = std::string(served.message());
    }
    health->SetServingStatus(false);
    absl::SleepFor(absl::Milliseconds(500));
  }
}

}  // namespace shift
