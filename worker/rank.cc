#include "worker/rank.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/gloo_communicator.h"
#include "worker/rendezvous_store.h"
#include "worker/worker_metrics.h"

namespace shift {
namespace {

namespace rpc = v1::internal;

// What a rank remembers of a running sequence between plans.
struct SequenceState {
  std::vector<int32_t> block_table;
  kernels::cpu::SamplingParams sampling;
};

}  // namespace

absl::Status RunRank(const RankOptions& options) {
  // Health (NOT_SERVING until the engine is ready) and /metrics come first,
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
  health_server->GetHealthCheckService()->SetServingStatus(false);
  SHIFT_ASSIGN_OR_RETURN(
      std::unique_ptr<WorkerMetrics> metrics,
      WorkerMetrics::Serve(absl::StrCat(options.host, ":", options.metrics_port)));

  SHIFT_ASSIGN_OR_RETURN(ModelFiles files, OpenModelFiles(options.model_dir));
  auto channel = grpc::CreateChannel(options.router, grpc::InsecureChannelCredentials());
  auto stub = rpc::Worker::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->Connect(&ctx);

  rpc::WorkerMessage hello;
  rpc::Register* reg = hello.mutable_register_();
  reg->set_group(options.group);
  reg->set_rank(options.rank);
  reg->set_world_size(options.world_size);
  reg->set_block_size(static_cast<uint32_t>(options.engine.block_size));
  reg->set_device("cpu");
  reg->set_deterministic(true);
  reg->set_weight_bytes(static_cast<uint64_t>(files.config.NumParameters()) * sizeof(float));
  reg->set_address(absl::StrCat(options.host, ":", health_port));
  reg->set_metrics_address(absl::StrCat(options.host, ":", metrics->port()));
  if (!stream->Write(hello)) {
    return absl::UnavailableError(absl::StrCat("cannot reach the router at ", options.router));
  }
  rpc::RouterMessage message;
  if (!stream->Read(&message) || !message.has_welcome()) {
    return absl::UnavailableError(
        absl::StrCat("the router at ", options.router, " did not welcome rank ", options.rank));
  }
  const uint64_t generation = message.welcome().generation();

  std::unique_ptr<GlooCommunicator> comm;
  if (options.world_size > 1) {
    GrpcRendezvousStore store(channel, options.group, generation,
                              std::chrono::milliseconds(options.rendezvous_timeout_ms));
    SHIFT_ASSIGN_OR_RETURN(comm, GlooCommunicator::Connect(
                                     store, "comm", options.rank, options.world_size, options.host,
                                     std::chrono::milliseconds(options.rendezvous_timeout_ms)));
  }
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                         Engine::Create(files, options.engine, comm.get()));
  metrics->SetModel(static_cast<double>(engine->weight_bytes()),
                    static_cast<double>(engine->num_blocks()));
  health_server->GetHealthCheckService()->SetServingStatus(true);

  std::map<uint64_t, SequenceState> sequences;
  while (stream->Read(&message)) {
    if (message.has_shutdown()) {
      stream->WritesDone();
      return absl::OkStatus();
    }
    if (!message.has_plan()) continue;
    const rpc::StepPlan& plan = message.plan();
    for (uint64_t id : plan.released_seq_ids()) sequences.erase(id);
    std::vector<SequenceStep> batch;
    for (const rpc::ScheduledSequence& s : plan.sequences()) {
      SequenceState& state = sequences[s.seq_id()];
      if (s.is_new()) {
        state.block_table.clear();
        state.sampling = {s.sampling().temperature(), s.sampling().top_p(),
                          static_cast<int32_t>(s.sampling().top_k()), s.sampling().seed()};
      }
      state.block_table.insert(state.block_table.end(), s.new_block_ids().begin(),
                               s.new_block_ids().end());
      SequenceStep step;
      step.seq_id = s.seq_id();
      step.token_ids.assign(s.token_ids().begin(), s.token_ids().end());
      step.start_position = s.start_position();
      step.block_table = state.block_table;
      step.sample = s.sample();
      step.sampling = state.sampling;
      step.return_logits = plan.return_logits();
      batch.push_back(std::move(step));
    }
    const uint64_t sent_before = comm ? comm->bytes_sent() : 0;
    const uint64_t received_before = comm ? comm->bytes_received() : 0;
    const double comm_before = comm ? comm->seconds() : 0.0;
    const auto start = std::chrono::steady_clock::now();
    auto out = engine->Step(batch, plan.mode() == v1::MODE_SP ? StepMode::kSequenceParallel
                                                              : StepMode::kTensorParallel);
    rpc::WorkerMessage reply;
    rpc::StepResult* result = reply.mutable_result();
    result->set_step_id(plan.step_id());
    result->set_rank(options.rank);
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
    metrics->RecordStep(plan.mode() == v1::MODE_SP, timings->compute_seconds(), comm_seconds,
                        static_cast<double>(timings->bytes_sent()));
    if (!out.ok()) {
      result->set_error(std::string(out.status().message()));
    } else {
      for (const SampledToken& t : *out) {
        rpc::SampledToken* sampled = result->add_sampled();
        sampled->set_seq_id(t.seq_id);
        sampled->set_token_id(t.token_id);
        sampled->set_logprob(t.logprob);
        sampled->mutable_logits()->Add(t.logits.begin(), t.logits.end());
      }
    }
    if (!stream->Write(reply)) break;
    if (!out.ok()) return out.status();
  }
  return absl::UnavailableError(absl::StrCat("the control stream to ", options.router,
                                             " closed: ", stream->Finish().error_message()));
}

}  // namespace shift
