// The host-memory Communicator: Gloo over TCP (fp32 host buffers, the CPU
// backend's), its ranks meeting through a
// rendezvous store. Gloo's exceptions are caught at this boundary.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
}  // namespace gloo

namespace shift {

// Gloo's TCP transport publishes each pair's address as the raw bytes of a
// sockaddr_storage and a sequence number, copied from getsockname into an
// uninitialised buffer: the bytes past the address (IPv4: 16, IPv6: 28) are
// whatever was on the stack. This zeroes them in every record of `value`
// (a value whose length is not a whole number of records is left alone).
void ZeroGlooAddressPadding(std::vector<char>& value);

class GlooCommunicator final : public Communicator {
 public:
  // Connects rank `rank` of `size` through `store` (keys are prefixed with
  // `prefix`, e.g. the group and generation), listening on `host`. Fails
  // with DEADLINE_EXCEEDED naming the missing ranks when they do not all
  // show up within `timeout`.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Connect(
      gloo::rendezvous::Store& store, const std::string& prefix, int rank, int size,
      const std::string& host, std::chrono::milliseconds timeout);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllGather(const kernels::Tensor& in, const kernels::Tensor& out) override;
  absl::Status AllGatherV(const kernels::Tensor& in, absl::Span<const int64_t> counts,
                          const kernels::Tensor& out) override;
  absl::Status Gather(const kernels::Tensor& in, const kernels::Tensor& out, int root) override;
  absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                         const kernels::Tensor& out,
                         absl::Span<const int64_t> recv_counts) override;
  absl::Status Broadcast(const kernels::Tensor& data, int root) override;
  absl::Status Barrier() override;

 private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, int rank, int size)
      : context_(std::move(context)), rank_(rank), size_(size) {}
  // Runs a Gloo call: exceptions become a status and break the communicator.
  template <typename Fn>
  absl::Status Run(const char* what, Fn&& fn);

  std::shared_ptr<gloo::Context> context_;
  int rank_, size_;
  absl::Status broken_;
};

}  // namespace shift
