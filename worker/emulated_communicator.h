// One rank of a P-rank group, alone: each collective is replaced by copies
// of this rank's own data into the places the other ranks' data would land,
// the same number of bytes as the real collective receives, and the time
// they take is counted apart (seconds()). With it an engine runs exactly
// rank r's share of a P-rank step (its weight ranges, its KV shard, its SP
// token slice) on one device: how long a rank of an 8-GPU group computes,
// measured where only one GPU exists. The values other ranks would send are
// stand-ins, so tokens are not meaningful; shapes, FLOPs and bytes are.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "worker/communicator.h"

namespace shift {

class EmulatedCommunicator final : public Communicator {
 public:
  // `backend` (not owned) copies between the buffers; rank in [0, size).
  EmulatedCommunicator(int rank, int size, kernels::Backend* backend)
      : rank_(rank), size_(size), backend_(backend) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool takes_device_buffers() const override { return true; }
  // On host fp32 memory the shared implementation (stand-in values joined
  // on the host); on a device, the same all-to-all and all-gather as
  // copies on the device, the rank's own slice standing in for the join.
  absl::Status DeterministicAllReduce(const kernels::Tensor& data) override;
  // The same among `members`.
  absl::Status SubgroupAllReduce(const kernels::Tensor& data,
                                 absl::Span<const int> members) override;

  absl::Status AllGather(const kernels::Tensor& in, const kernels::Tensor& out) override;
  absl::Status AllGatherV(const kernels::Tensor& in, absl::Span<const int64_t> counts,
                          const kernels::Tensor& out) override;
  absl::Status Gather(const kernels::Tensor& in, const kernels::Tensor& out, int root) override;
  absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                         const kernels::Tensor& out,
                         absl::Span<const int64_t> recv_counts) override;
  // The root's data is the rank's own: only the traffic is counted.
  absl::Status Broadcast(const kernels::Tensor& data, int root) override;
  absl::Status Barrier() override { return absl::OkStatus(); }

 private:
  // Fills `count` elements of `dst` from element `dst_at` with `src`'s
  // elements [src_at, src_at + src_count), repeated as often as needed
  // (none: all of `src`; `src` empty: zeros).
  absl::Status Fill(const kernels::Tensor& src, int64_t src_at, int64_t src_count,
                    const kernels::Tensor& dst, int64_t dst_at, int64_t count);

  int rank_, size_;
  kernels::Backend* backend_;
};

}  // namespace shift
