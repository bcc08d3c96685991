// How the ranks of a worker group exchange tensors inside a step. One
// interface over backend buffers, several implementations: Gloo over TCP on
// host memory, NCCL on device memory (worker/nccl_communicator.h), and the
// emulation of one rank of a larger group.
// Every call returns a status instead of throwing; after a failure the
// communicator is broken for good, and the group builds a new one under a
// new generation. Each call counts the bytes it moves.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace shift {

// What collectives moved: bytes this rank sent and received, and seconds.
struct CollectiveTraffic {
  uint64_t bytes_sent = 0, bytes_received = 0;
  double seconds = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every buffer is a contiguous tensor of backend memory; each backend
  // says which devices and dtypes it takes (Gloo: fp32 host memory). Counts
  // are elements.
  //
  // out (size()·in.size() elements) = every rank's `in`, in rank order.
  virtual absl::Status AllGather(const kernels::Tensor& in, const kernels::Tensor& out) = 0;
  // Like AllGather with rank r contributing counts[r] elements.
  virtual absl::Status AllGatherV(const kernels::Tensor& in, absl::Span<const int64_t> counts,
                                  const kernels::Tensor& out) = 0;
  // On `root`, out (size()·in.size() elements) = every rank's `in`;
  // elsewhere out is untouched (may be empty).
  virtual absl::Status Gather(const kernels::Tensor& in, const kernels::Tensor& out, int root) = 0;
  // Sends send_counts[r] elements (consecutive in `in`) to each rank r and
  // receives recv_counts[r] elements from each, consecutive in `out`.
  virtual absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                                 const kernels::Tensor& out,
                                 absl::Span<const int64_t> recv_counts) = 0;
  // Every rank's `data` (the same number of elements on each) becomes
  // `root`'s, in place and bit for bit: any 4-byte content travels, e.g.
  // token ids as their int32 bits in an fp32 tensor (the tokens the leader
  // sampled, for the other ranks' next step). Counted as a flat broadcast:
  // the root sends (P - 1)·n elements, every other rank receives n.
  virtual absl::Status Broadcast(const kernels::Tensor& data, int root) = 0;
  virtual absl::Status Barrier() = 0;

  // Whether the calls take device (non-CPU) buffers: NCCL's, a host-staged
  // communicator's and the emulation's do; Gloo's take host memory only.
  virtual bool takes_device_buffers() const { return false; }
  // Whether the calls, made while the backend's stream is being captured,
  // record into the graph (NCCL's do); host-staged and Gloo ones cannot.
  virtual bool records_into_graphs() const { return false; }

  // The deterministic all-reduce (docs/architecture.md, Determinism): `data`
  // holds this rank's subtree value of each of its elements; afterwards
  // every rank holds, for each element, the P values joined by the top of
  // the canonical tree. An all-to-all gives each rank its 1/P slice from
  // everyone, the rank joins them, and an all-gather returns the slices: the
  // bytes of a ring all-reduce. Needs size() in {1, 2, 4, 8} and fp32 host
  // memory (the join runs on the host); a communicator of device buffers
  // overrides it.
  virtual absl::Status DeterministicAllReduce(const kernels::Tensor& data);

  // The deterministic all-reduce among `members` only (ranks of this
  // communicator; the subgroup's rank j is members[j], whose value is
  // subtree j), called by every rank of this communicator at the same time,
  // each with its own subgroup (the subgroups partition the ranks). With
  // every rank as members it is DeterministicAllReduce; otherwise the
  // default is an all-to-all and its reverse among the members (ring
  // traffic) on fp32 host memory, joined on the host. Communicators of
  // device buffers override it.
  virtual absl::Status SubgroupAllReduce(const kernels::Tensor& data,
                                         absl::Span<const int> members);

  // A communicator among `members` (ranks of this one, numbered in that
  // order; this rank among them): the hybrid layout's Ulysses groups and TP
  // subgroups (docs/architecture.md, The hybrid layout). It is a view:
  // every rank of this communicator runs the same collective at the same
  // time, each in its own subgroup, as one AllToAllV of this communicator
  // with nothing sent outside the subgroup (its all-reduce is
  // SubgroupAllReduce). It runs all-to-alls, all-reduces and barriers;
  // counts its own bytes and seconds (this communicator counts them too);
  // and must not outlive this communicator.
  std::unique_ptr<Communicator> Subgroup(std::vector<int> members);

  // The two all-to-alls of a subgroup all-reduce of n elements among
  // `members`, as counts over this communicator's ranks: `out` sends each
  // member its slice (ReduceSlices over the members) and receives ours,
  // `mine` elements, from each; `back` returns our slice, joined, to every
  // member and receives each member's. INVALID_ARGUMENT when this rank is
  // not a member.
  struct SubgroupExchange {
    int64_t mine = 0;
    std::vector<int64_t> out_send, out_recv, back_send, back_recv;
  };
  absl::StatusOr<SubgroupExchange> PlanSubgroupExchange(int64_t n,
                                                        absl::Span<const int> members) const;

  // The deterministic all-reduce's split of n elements over p ranks: slice
  // s is [n·s/p, n·(s+1)/p); element counts, in rank order.
  static std::vector<int64_t> ReduceSlices(int64_t n, int p);

  CollectiveTraffic traffic() const { return {bytes_sent_, bytes_received_, seconds_}; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  // Wall seconds spent inside collectives.
  double seconds() const { return seconds_; }

 protected:
  void CountBytes(uint64_t sent, uint64_t received) {
    bytes_sent_ += sent;
    bytes_received_ += received;
  }
  void CountSeconds(double seconds) { seconds_ += seconds; }

 private:
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  double seconds_ = 0;
};

}  // namespace shift
