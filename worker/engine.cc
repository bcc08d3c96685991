#include "worker/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/defaults.h"
#include "common/status.h"
#include "core/scheduler.h"
#include "kernels/backends.h"

namespace shift {

Engine::Engine(ModelConfig config, EngineOptions options, Communicator* comm,
               std::unique_ptr<kernels::Backend> backend)
    : config_(std::move(config)), options_(options), comm_(comm), backend_(std::move(backend)) {}

absl::Status Engine::Attach(Communicator* comm) {
  if (comm != nullptr && (comm->rank() != rank() || comm->size() != world_size())) {
    return absl::InvalidArgumentError(absl::StrCat("a communicator for rank ", comm->rank(), " of ",
                                                   comm->size(), " cannot serve rank ", rank(),
                                                   " of ", world_size()));
  }
  if (comm != nullptr && backend_->device() != kernels::Device::kCpu &&
      !comm->takes_device_buffers()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a group on --device=", kernels::DeviceName(backend_->device()),
                     " needs a communicator of device buffers (host-staged, NCCL or emulated)"));
  }
  // Graphs recorded with the old communicator's collectives inside are
  // stale with a new one.
  if (executor_ != nullptr && comm != comm_) executor_->ResetDecodeGraphs();
  comm_ = comm;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelFiles& files,
                                                       const EngineOptions& options,
                                                       Communicator* comm) {
  kernels::BackendOptions backend_options;
  backend_options.threads = options.threads;
  backend_options.fp8_gemm = options.fp8_gemm;
  if (options.device == kernels::Device::kCuda) {
    const int rank = comm != nullptr ? comm->rank() : options.rank;
    backend_options.cuda_device = options.cuda_device >= 0
                                      ? options.cuda_device
                                      : rank % std::max(1, kernels::CudaDeviceCount());
  }
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend,
                         kernels::CreateBackend(options.device, backend_options));
  return Create(files, options, comm, std::move(backend));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelFiles& files,
                                                       const EngineOptions& options_in,
                                                       Communicator* comm_in,
                                                       std::unique_ptr<kernels::Backend> backend) {
  EngineOptions options = options_in;
  options.device = backend->device();
  if (comm_in != nullptr) {
    options.rank = comm_in->rank();
    options.world_size = comm_in->size();
  }
  const int64_t p = options.world_size;
  if (p < 1 || options.rank < 0 || options.rank >= p) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is outside a group of ", p));
  }
  if (options.device != kernels::Device::kCpu && comm_in != nullptr &&
      !comm_in->takes_device_buffers()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a group on --device=", kernels::DeviceName(options.device),
                     " needs a communicator of device buffers (host-staged, NCCL or emulated)"));
  }
  backend->set_op_timing(options.op_timing);
  std::unique_ptr<Engine> engine(new Engine(files.config, options, comm_in, std::move(backend)));
  DecodeGraphs graphs;
  graphs.max_batch = options.max_graph_batch;
  graphs.with_collectives = options.graphs_with_collectives;
  if (!options.enforce_eager && !options.op_timing && engine->backend_->SupportsGraphs()) {
    graphs.mode = DecodeGraphs::kCaptured;
  } else if (options.pad_decodes) {
    graphs.mode = DecodeGraphs::kPadded;
  }
  SHIFT_ASSIGN_OR_RETURN(
      engine->executor_,
      ModelExecutor::Create(files.dir, files.config, *files.checkpoint, engine->backend_.get(),
                            options.rank, options.layout(), options.kv_cache_bytes,
                            options.block_size, graphs));
  return engine;
}

absl::Status Engine::Validate(const std::vector<SequenceStep>& batch) const {
  for (const SequenceStep& s : batch) {
    if (s.token_ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " has no tokens"));
    }
    const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
    if (s.start_position < 0 || end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " positions [",
                                                     s.start_position, ", ", end,
                                                     ") exceed the model's context"));
    }
    if (static_cast<int64_t>(s.block_table.size()) * options_.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", s.seq_id, " needs ", (end + options_.block_size - 1) / options_.block_size,
          " blocks, has ", s.block_table.size()));
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= num_blocks()) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s.seq_id, " uses block ", b, " of ", num_blocks()));
      }
    }
    for (int32_t id : s.token_ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", s.seq_id, " has token id ", id, " outside the vocabulary"));
      }
    }
    const kernels::SamplingParams& p = s.sampling;
    if (!std::isfinite(p.temperature) || p.temperature < 0 || !std::isfinite(p.top_p) ||
        p.top_p < 0 || p.top_p > 1 || p.top_k < 0 || s.top_logprobs < 0 ||
        s.top_logprobs > static_cast<int32_t>(defaults::kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s.seq_id, " has sampling parameters out of range (temperature ",
                       p.temperature, ", top_p ", p.top_p, ", top_k ", p.top_k, ", top_logprobs ",
                       s.top_logprobs, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::ResolvePending(const std::map<uint64_t, int32_t>& previous,
                                    std::vector<SequenceStep>& batch) {
  // The leader's tokens, as int32 bits in fp32 values; elsewhere zeros that
  // the broadcast overwrites (an emulated rank, which has no leader, keeps
  // them: any valid token serves its timing).
  std::vector<float> values;
  for (const SequenceStep& s : batch) {
    for (int32_t id : s.token_ids) {
      if (id != kPendingToken) continue;
      int32_t token = 0;
      if (rank() == 0) {
        auto it = previous.find(s.seq_id);
        // Not sampled in the step before: every rank refuses the step in
        // Validate (the id is outside the vocabulary), none waits for a
        // broadcast that does not come.
        token = it != previous.end() ? it->second : kPendingToken;
      }
      float bits;
      std::memcpy(&bits, &token, sizeof(bits));
      values.push_back(bits);
    }
  }
  if (comm_ != nullptr && world_size() > 1) {
    const CollectiveTraffic before = comm_->traffic();
    if (comm_->takes_device_buffers() && backend_->device() != kernels::Device::kCpu) {
      SHIFT_ASSIGN_OR_RETURN(
          kernels::Buffer buffer,
          backend_->Allocate(DType::kF32, 1, static_cast<int64_t>(values.size())));
      SHIFT_RETURN_IF_ERROR(backend_->CopyFromHost(values.data(), buffer.tensor()));
      SHIFT_RETURN_IF_ERROR(comm_->Broadcast(buffer.tensor(), 0));
      SHIFT_RETURN_IF_ERROR(backend_->CopyToHost(buffer.tensor(), values.data()));
    } else {
      SHIFT_RETURN_IF_ERROR(comm_->Broadcast(
          kernels::HostTensor(values.data(), static_cast<int64_t>(values.size())), 0));
    }
    executor_->CountTraffic(ModelExecutor::kGatherGroup, before, comm_->traffic());
  }
  size_t next = 0;
  for (SequenceStep& s : batch) {
    for (int32_t& id : s.token_ids) {
      if (id == kPendingToken) std::memcpy(&id, &values[next++], sizeof(id));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<EngineSample>> Engine::Step(const std::vector<SequenceStep>& planned,
                                                       StepMode mode) {
  // Decodes of pending tokens take the tokens the leader sampled in the
  // step before (the router planned this one ahead of its results).
  std::map<uint64_t, int32_t> previous = std::move(previous_samples_);
  previous_samples_.clear();
  std::vector<SequenceStep> resolved;
  const bool pending = std::any_of(planned.begin(), planned.end(), [](const SequenceStep& s) {
    return std::find(s.token_ids.begin(), s.token_ids.end(), kPendingToken) != s.token_ids.end();
  });
  if (pending) {
    resolved = planned;
    SHIFT_RETURN_IF_ERROR(ResolvePending(previous, resolved));
  }
  const std::vector<SequenceStep>& batch = pending ? resolved : planned;
  SHIFT_RETURN_IF_ERROR(Validate(batch));
  kernels::StepLayout layout;
  std::vector<int64_t> sample_tokens;  // each sampling sequence's last token
  std::vector<kernels::SampleRequest> requests;
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceStep& seq = batch[s];
    const int64_t count = static_cast<int64_t>(seq.token_ids.size());
    layout.sequences.push_back({layout.num_tokens(), count, seq.start_position, seq.block_table});
    for (int64_t i = 0; i < count; ++i) {
      layout.token_ids.push_back(seq.token_ids[i]);
      layout.positions.push_back(seq.start_position + i);
      layout.sequence_of_token.push_back(static_cast<int32_t>(s));
    }
    if (!seq.sample) continue;
    sample_tokens.push_back(layout.num_tokens() - 1);
    kernels::SampleRequest request;
    request.params = seq.sampling;
    // The sampled token will sit at the position after the last one computed.
    request.position = seq.start_position + count;
    request.top_logprobs = seq.top_logprobs;
    request.return_logits = seq.return_logits;
    requests.push_back(request);
  }
  SHIFT_ASSIGN_OR_RETURN(std::vector<kernels::SampleResult> results,
                         executor_->Step(std::move(layout), sample_tokens, requests, mode, comm_));
  std::vector<EngineSample> out;
  if (rank() != 0) return out;
  for (size_t i = 0, s = 0; s < batch.size(); ++s) {
    if (!batch[s].sample) continue;
    kernels::SampleResult& result = results[i++];
    EngineSample token;
    token.seq_id = batch[s].seq_id;
    token.token_id = result.token_id;
    token.logprob = result.logprob;
    token.top = std::move(result.top);
    token.logits = std::move(result.logits);
    previous_samples_[token.seq_id] = token.token_id;
    out.push_back(std::move(token));
  }
  return out;
}

}  // namespace shift
