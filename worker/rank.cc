#include "worker/rank.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/gloo_communicator.h"
#include "worker/rendezvous_store.h"

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
                                     store, "comm", options.rank, options.world_size, "127.0.0.1",
                                     std::chrono::milliseconds(options.rendezvous_timeout_ms)));
  }
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                         Engine::Create(files, options.engine, comm.get()));

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
    const auto start = std::chrono::steady_clock::now();
    auto out = engine->Step(batch, plan.mode() == v1::MODE_SP ? StepMode::kSequenceParallel
                                                              : StepMode::kTensorParallel);
    rpc::WorkerMessage reply;
    rpc::StepResult* result = reply.mutable_result();
    result->set_step_id(plan.step_id());
    result->set_rank(options.rank);
    result->mutable_timings()->set_compute_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (comm) {
      result->mutable_timings()->set_bytes_sent(comm->bytes_sent() - sent_before);
      result->mutable_timings()->set_bytes_received(comm->bytes_received() - received_before);
    }
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
