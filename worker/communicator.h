// How the ranks of a worker group exchange tensors inside a step. One
// interface, several backends (Gloo over TCP on CPU now; NCCL on GPU later).
// Every call returns a status instead of throwing; after a failure the
// communicator is broken for good, and the group builds a new one under a
// new generation. Each call counts the bytes it moves.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace shift {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // out (size()·n floats) = every rank's `in` (n floats), in rank order.
  virtual absl::Status AllGather(const float* in, int64_t n, float* out) = 0;
  // Like AllGather with rank r contributing counts[r] floats.
  virtual absl::Status AllGatherV(const float* in, absl::Span<const int64_t> counts,
                                  float* out) = 0;
  // On `root`, out (size()·n floats) = every rank's `in`; elsewhere out is
  // untouched (may be null).
  virtual absl::Status Gather(const float* in, int64_t n, float* out, int root) = 0;
  // Sends send_counts[r] floats (consecutive in `in`) to each rank r and
  // receives recv_counts[r] floats from each, consecutive in `out`.
  virtual absl::Status AllToAllV(const float* in, absl::Span<const int64_t> send_counts, float* out,
                                 absl::Span<const int64_t> recv_counts) = 0;
  virtual absl::Status Barrier() = 0;

  // The deterministic all-reduce (docs/architecture.md, Determinism): `data` holds this
  // rank's subtree value of each of n elements; afterwards every rank holds,
  // for each element, the P values joined by the top of the canonical tree.
  // An all-to-all gives each rank its 1/P slice from everyone, the rank joins
  // them, and an all-gather returns the slices: the bytes of a ring
  // all-reduce. Needs size() in {1, 2, 4, 8}.
  absl::Status DeterministicAllReduce(float* data, int64_t n);

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
