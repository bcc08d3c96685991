#include "worker/staged_communicator.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <vector>

#include "common/status.h"

namespace shift {

bool StagedCommunicator::Staged(const kernels::Tensor& t) const {
  return always_stage_ || t.device != kernels::Device::kCpu || t.dtype != DType::kF32;
}

template <typename Call>
absl::Status StagedCommunicator::Run(const kernels::Tensor& in, const kernels::Tensor* out,
                                     Call call) {
  const auto start = std::chrono::steady_clock::now();
  const uint64_t sent = inner_->bytes_sent(), received = inner_->bytes_received();
  std::vector<float> host_in, host_out;
  kernels::Tensor in_view = in, out_view = out != nullptr ? *out : kernels::Tensor();
  if (Staged(in)) {
    host_in.resize(static_cast<size_t>(in.size()));
    if (!in.empty()) SHIFT_RETURN_IF_ERROR(backend_->CopyToHost(in, host_in.data()));
    in_view = kernels::HostTensor(host_in.data(), in.size());
  }
  const bool stage_out = out != nullptr && !out->empty() && Staged(*out);
  if (stage_out) {
    host_out.resize(static_cast<size_t>(out->size()));
    out_view = kernels::HostTensor(host_out.data(), out->size());
  }
  SHIFT_RETURN_IF_ERROR(call(in_view, out_view));
  if (stage_out) SHIFT_RETURN_IF_ERROR(backend_->CopyFromHost(host_out.data(), *out));
  CountBytes(inner_->bytes_sent() - sent, inner_->bytes_received() - received);
  CountSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

absl::Status StagedCommunicator::AllGather(const kernels::Tensor& in, const kernels::Tensor& out) {
  return Run(in, &out, [&](const kernels::Tensor& i, const kernels::Tensor& o) {
    return inner_->AllGather(i, o);
  });
}

absl::Status StagedCommunicator::AllGatherV(const kernels::Tensor& in,
                                            absl::Span<const int64_t> counts,
                                            const kernels::Tensor& out) {
  return Run(in, &out, [&](const kernels::Tensor& i, const kernels::Tensor& o) {
    return inner_->AllGatherV(i, counts, o);
  });
}

absl::Status StagedCommunicator::Broadcast(const kernels::Tensor& data, int root) {
  // In place: the root's data goes out, the others' is written back.
  return Run(data, rank() == root ? nullptr : &data,
             [&](const kernels::Tensor& i, const kernels::Tensor& o) {
               return inner_->Broadcast(rank() == root ? i : o, root);
             });
}

absl::Status StagedCommunicator::Gather(const kernels::Tensor& in, const kernels::Tensor& out,
                                        int root) {
  // Only the root's output is written (and staged back).
  return Run(in, rank() == root ? &out : nullptr,
             [&](const kernels::Tensor& i, const kernels::Tensor& o) {
               return inner_->Gather(i, o, root);
             });
}

absl::Status StagedCommunicator::AllToAllV(const kernels::Tensor& in,
                                           absl::Span<const int64_t> send_counts,
                                           const kernels::Tensor& out,
                                           absl::Span<const int64_t> recv_counts) {
  return Run(in, &out, [&](const kernels::Tensor& i, const kernels::Tensor& o) {
    return inner_->AllToAllV(i, send_counts, o, recv_counts);
  });
}

absl::Status StagedCommunicator::Barrier() { return inner_->Barrier(); }

absl::Status StagedCommunicator::DeterministicAllReduce(const kernels::Tensor& data) {
  std::vector<int> everyone(size());
  std::iota(everyone.begin(), everyone.end(), 0);
  return SubgroupAllReduce(data, everyone);
}

absl::Status StagedCommunicator::SubgroupAllReduce(const kernels::Tensor& data,
                                                   absl::Span<const int> members) {
  if (members.size() <= 1) return absl::OkStatus();
  // In place: the data goes to the host, is joined there, and comes back.
  return Run(data, &data, [&](const kernels::Tensor& i, const kernels::Tensor& o) {
    if (o.data != i.data && !o.empty()) {
      std::copy(i.As<float>(), i.As<float>() + i.size(), o.As<float>());
    }
    return inner_->SubgroupAllReduce(o.empty() ? i : o, members);
  });
}

}  // namespace shift
