// A step recorded as graphs in pieces between collectives, for groups whose
// collectives cannot be recorded (host-staged Gloo, the emulation): while
// the step is captured, this communicator stands in for the group's; at
// each collective it ends the piece being recorded, runs that piece (the
// collective needs its results), runs the collective itself and remembers
// it, and starts recording the next piece. A replay runs each piece's
// graph, then its collective, on the same buffers (graph memory keeps its
// addresses).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/communicator.h"

namespace shift {

struct GraphPiece {
  std::unique_ptr<kernels::Graph> graph;
  std::function<absl::Status()> collective;  // after the graph; none after the last
};

class PiecewiseCapture final : public Communicator {
 public:
  // `inner` (the group's communicator) and `backend` (not owned) outlive it.
  PiecewiseCapture(Communicator* inner, kernels::Backend* backend)
      : inner_(inner), backend_(backend) {}
  ~PiecewiseCapture() override { Abandon(); }

  // Starts recording the first piece.
  absl::Status Begin();
  // Ends and runs the last piece; the pieces, in order (the step has run).
  absl::StatusOr<std::vector<GraphPiece>> Finish();
  // Ends a capture left under way by a failure.
  void Abandon();

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  bool takes_device_buffers() const override { return inner_->takes_device_buffers(); }
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

 private:
  // Ends the piece, runs it and then `collective`, keeps both, and starts
  // the next piece.
  absl::Status Cut(std::function<absl::Status()> collective);

  Communicator* inner_;
  kernels::Backend* backend_;
  bool capturing_ = false;
  std::vector<GraphPiece> pieces_;
};

// Runs recorded pieces: each graph, then its collective.
absl::Status ReplayPieces(kernels::Backend& backend, const std::vector<GraphPiece>& pieces);

}  // namespace shift
