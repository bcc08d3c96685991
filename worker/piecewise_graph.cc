#include "worker/piecewise_graph.h"

#include <utility>

#include "common/status.h"

namespace shift {

absl::Status PiecewiseCapture::Begin() {
  SHIFT_RETURN_IF_ERROR(backend_->BeginCapture());
  capturing_ = true;
  return absl::OkStatus();
}

absl::Status PiecewiseCapture::Cut(std::function<absl::Status()> collective) {
  capturing_ = false;
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Graph> graph, backend_->EndCapture());
  SHIFT_RETURN_IF_ERROR(backend_->Replay(*graph));
  SHIFT_RETURN_IF_ERROR(collective());
  pieces_.push_back({std::move(graph), std::move(collective)});
  return Begin();
}

absl::StatusOr<std::vector<GraphPiece>> PiecewiseCapture::Finish() {
  capturing_ = false;
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Graph> graph, backend_->EndCapture());
  SHIFT_RETURN_IF_ERROR(backend_->Replay(*graph));
  pieces_.push_back({std::move(graph), nullptr});
  return std::move(pieces_);
}

void PiecewiseCapture::Abandon() {
  if (capturing_) backend_->EndCapture().IgnoreError();
  capturing_ = false;
}

// The collectives keep copies of their arguments: tensors are views of
// memory graphs keep, counts are copied.
absl::Status PiecewiseCapture::AllGather(const kernels::Tensor& in, const kernels::Tensor& out) {
  return Cut([inner = inner_, in, out] { return inner->AllGather(in, out); });
}

absl::Status PiecewiseCapture::AllGatherV(const kernels::Tensor& in,
                                          absl::Span<const int64_t> counts,
                                          const kernels::Tensor& out) {
  return Cut([inner = inner_, in, counts = std::vector<int64_t>(counts.begin(), counts.end()),
              out] { return inner->AllGatherV(in, counts, out); });
}

absl::Status PiecewiseCapture::Broadcast(const kernels::Tensor& data, int root) {
  return Cut([inner = inner_, data, root] { return inner->Broadcast(data, root); });
}

absl::Status PiecewiseCapture::Gather(const kernels::Tensor& in, const kernels::Tensor& out,
                                      int root) {
  return Cut([inner = inner_, in, out, root] { return inner->Gather(in, out, root); });
}

absl::Status PiecewiseCapture::AllToAllV(const kernels::Tensor& in,
                                         absl::Span<const int64_t> send_counts,
                                         const kernels::Tensor& out,
                                         absl::Span<const int64_t> recv_counts) {
  return Cut([inner = inner_, in,
              send = std::vector<int64_t>(send_counts.begin(), send_counts.end()), out,
              recv = std::vector<int64_t>(recv_counts.begin(), recv_counts.end())] {
    return inner->AllToAllV(in, send, out, recv);
  });
}

absl::Status PiecewiseCapture::Barrier() {
  return Cut([inner = inner_] { return inner->Barrier(); });
}

absl::Status PiecewiseCapture::DeterministicAllReduce(const kernels::Tensor& data) {
  return Cut([inner = inner_, data] { return inner->DeterministicAllReduce(data); });
}

absl::Status PiecewiseCapture::SubgroupAllReduce(const kernels::Tensor& data,
                                                 absl::Span<const int> members) {
  return Cut([inner = inner_, data, members = std::vector<int>(members.begin(), members.end())] {
    return inner->SubgroupAllReduce(data, members);
  });
}

absl::Status ReplayPieces(kernels::Backend& backend, const std::vector<GraphPiece>& pieces) {
  for (const GraphPiece& piece : pieces) {
    SHIFT_RETURN_IF_ERROR(backend.Replay(*piece.graph));
    if (piece.collective) SHIFT_RETURN_IF_ERROR(piece.collective());
  }
  return absl::OkStatus();
}

}  // namespace shift
