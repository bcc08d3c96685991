#include "worker/emulated_communicator.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {
namespace {

// Elements [at, at + count) of a contiguous tensor, as a one-row view.
kernels::Tensor Flat(const kernels::Tensor& t, int64_t at, int64_t count) {
  kernels::Tensor view = t;
  view.data = static_cast<char*>(t.data) + at * static_cast<int64_t>(DTypeSize(t.dtype));
  view.rows = 1;
  view.cols = count;
  view.ld = count;
  return view;
}

// Times a collective's stand-in copies.
class Timed {
 public:
  Timed() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

absl::Status EmulatedCommunicator::Fill(const kernels::Tensor& src, int64_t src_at,
                                        int64_t src_count, const kernels::Tensor& dst,
                                        int64_t dst_at, int64_t count) {
  if (count == 0) return absl::OkStatus();
  if (src_count == 0) {  // nothing of ours goes there: stand in with the whole input
    src_at = 0;
    src_count = src.size();
  }
  if (src_count == 0) {  // this rank holds nothing (an SP slice of no tokens): zeros
    SHIFT_ASSIGN_OR_RETURN(kernels::Buffer zeros,
                           backend_->Allocate(dst.dtype, 1, count, /*zero=*/true));
    return backend_->Copy(zeros.tensor(), Flat(dst, dst_at, count));
  }
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(src_count, count - done);
    SHIFT_RETURN_IF_ERROR(backend_->Copy(Flat(src, src_at, n), Flat(dst, dst_at + done, n)));
    done += n;
  }
  return absl::OkStatus();
}

absl::Status EmulatedCommunicator::AllGather(const kernels::Tensor& in,
                                             const kernels::Tensor& out) {
  return AllGatherV(in, std::vector<int64_t>(size_, in.size()), out);
}

absl::Status EmulatedCommunicator::AllGatherV(const kernels::Tensor& in,
                                              absl::Span<const int64_t> counts,
                                              const kernels::Tensor& out) {
  if (static_cast<int>(counts.size()) != size_ || counts[rank_] != in.size() ||
      std::accumulate(counts.begin(), counts.end(), int64_t{0}) != out.size()) {
    return absl::InvalidArgumentError("all-gather counts do not match the buffers");
  }
  const Timed timed;
  int64_t at = 0, others = 0;
  for (int r = 0; r < size_; ++r) {
    SHIFT_RETURN_IF_ERROR(Fill(in, 0, in.size(), out, at, counts[r]));
    if (r != rank_) others += counts[r];
    at += counts[r];
  }
  const uint64_t es = DTypeSize(in.dtype);
  CountBytes(static_cast<uint64_t>(in.size() * (size_ - 1)) * es, others * es);
  CountSeconds(timed.seconds());
  return absl::OkStatus();
}

absl::Status EmulatedCommunicator::Gather(const kernels::Tensor& in, const kernels::Tensor& out,
                                          int root) {
  if (rank_ != root) {
    CountBytes(in.size() * DTypeSize(in.dtype), 0);
    return absl::OkStatus();
  }
  return AllGather(in, out);
}

absl::Status EmulatedCommunicator::Broadcast(const kernels::Tensor& data, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast from rank ", root, " of ", size_));
  }
  const uint64_t bytes = static_cast<uint64_t>(data.size()) * DTypeSize(data.dtype);
  if (rank_ == root) {
    CountBytes(bytes * (size_ - 1), 0);
  } else {
    CountBytes(0, bytes);
  }
  return absl::OkStatus();
}

absl::Status EmulatedCommunicator::DeterministicAllReduce(const kernels::Tensor& data) {
  if (data.device == kernels::Device::kCpu || size_ == 1) {
    return Communicator::DeterministicAllReduce(data);
  }
  if (!data.contiguous()) {
    return absl::InvalidArgumentError("the all-reduce takes a contiguous buffer");
  }
  const std::vector<int64_t> slice = ReduceSlices(data.size(), size_);
  const int64_t mine = slice[rank_];
  const std::vector<int64_t> from_each(size_, mine);
  SHIFT_ASSIGN_OR_RETURN(kernels::Buffer received,
                         backend_->Allocate(data.dtype, 1, std::max<int64_t>(1, mine * size_)));
  SHIFT_RETURN_IF_ERROR(AllToAllV(data, slice, Flat(received, 0, mine * size_), from_each));
  return AllGatherV(Flat(received, 0, mine), slice, data);
}

absl::Status EmulatedCommunicator::SubgroupAllReduce(const kernels::Tensor& data,
                                                     absl::Span<const int> members) {
  const int q = static_cast<int>(members.size());
  if (data.device == kernels::Device::kCpu || q == size_ || q == 1) {
    return Communicator::SubgroupAllReduce(data, members);
  }
  if (!data.contiguous()) {
    return absl::InvalidArgumentError("the all-reduce takes a contiguous buffer");
  }
  // An all-to-all among the members and its reverse, the rank's own slice
  // standing in for the join.
  SHIFT_ASSIGN_OR_RETURN(const SubgroupExchange x, PlanSubgroupExchange(data.size(), members));
  const int64_t mine = x.mine;
  SHIFT_ASSIGN_OR_RETURN(kernels::Buffer received,
                         backend_->Allocate(data.dtype, 1, std::max<int64_t>(1, mine * q)));
  SHIFT_RETURN_IF_ERROR(AllToAllV(data, x.out_send, Flat(received, 0, mine * q), x.out_recv));
  return AllToAllV(Flat(received, 0, mine * q), x.back_send, data, x.back_recv);
}

absl::Status EmulatedCommunicator::AllToAllV(const kernels::Tensor& in,
                                             absl::Span<const int64_t> send_counts,
                                             const kernels::Tensor& out,
                                             absl::Span<const int64_t> recv_counts) {
  if (static_cast<int>(send_counts.size()) != size_ ||
      static_cast<int>(recv_counts.size()) != size_ ||
      std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0}) != in.size() ||
      std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}) != out.size()) {
    return absl::InvalidArgumentError("all-to-all counts do not match the buffers");
  }
  const Timed timed;
  // What rank r would send us stands in as what we send ourselves.
  const int64_t own_at =
      std::accumulate(send_counts.begin(), send_counts.begin() + rank_, int64_t{0});
  int64_t at = 0, sent = 0, received = 0;
  for (int r = 0; r < size_; ++r) {
    SHIFT_RETURN_IF_ERROR(Fill(in, own_at, send_counts[rank_], out, at, recv_counts[r]));
    if (r != rank_) {
      sent += send_counts[r];
      received += recv_counts[r];
    }
    at += recv_counts[r];
  }
  const uint64_t es = DTypeSize(in.dtype);
  CountBytes(sent * es, received * es);
  CountSeconds(timed.seconds());
  return absl::OkStatus();
}

}  // namespace shift
