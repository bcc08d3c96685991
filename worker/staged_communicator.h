// Collectives on device buffers through a host communicator: each call
// copies its device inputs to host fp32 memory, runs the inner (Gloo)
// collective there, and copies the results back to the device. For ranks
// that share one GPU (NCCL refuses two ranks on a device) and for machines
// with fewer GPUs than ranks: slow, but the same executor, modes and KV
// layout as everywhere. Host fp32 buffers pass straight through; values are
// moved as fp32 whatever the device dtype (bf16 converts exactly).
#pragma once

#include <memory>

#include "kernels/backend.h"
#include "worker/communicator.h"

namespace shift {

class StagedCommunicator final : public Communicator {
 public:
  // `backend` (not owned) copies between device and host. With
  // `always_stage`, host buffers are staged too (tests run the staging
  // path on the CPU backend).
  StagedCommunicator(std::unique_ptr<Communicator> inner, kernels::Backend* backend,
                     bool always_stage = false)
      : inner_(std::move(inner)), backend_(backend), always_stage_(always_stage) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  bool takes_device_buffers() const override { return true; }

  absl::Status AllGather(const kernels::Tensor& in, const kernels::Tensor& out) override;
  absl::Status AllGatherV(const kernels::Tensor& in, absl::Span<const int64_t> counts,
                          const kernels::Tensor& out) override;
  absl::Status Gather(const kernels::Tensor& in, const kernels::Tensor& out, int root) override;
  absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                         const kernels::Tensor& out,
                         absl::Span<const int64_t> recv_counts) override;
  absl::Status Broadcast(const kernels::Tensor& data, int root) override;
  absl::Status Barrier() override;
  absl::Status DeterministicAllReduce(const kernels::Tensor& data) override;
  absl::Status SubgroupAllReduce(const kernels::Tensor& data,
                                 absl::Span<const int> members) override;

  const Communicator& inner() const { return *inner_; }

 private:
  // Whether `t` must go through host memory.
  bool Staged(const kernels::Tensor& t) const;
  // Runs `call` on host views of `in` (copied from the device) and `out`
  // (copied back after), counting the inner communicator's bytes and the
  // whole time, staging included.
  template <typename Call>
  absl::Status Run(const kernels::Tensor& in, const kernels::Tensor* out, Call call);

  std::unique_ptr<Communicator> inner_;
  kernels::Backend* backend_;
  bool always_stage_;
};

}  // namespace shift
