#include "worker/communicator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/gemm.h"

namespace shift {

std::vector<int64_t> Communicator::ReduceSlices(int64_t n, int p) {
  std::vector<int64_t> slice(p);
  for (int s = 0; s < p; ++s) slice[s] = n * (s + 1) / p - n * s / p;
  return slice;
}

namespace {

// Whether `tensor` is what the host join takes.
absl::Status RequireHostF32(const kernels::Tensor& tensor) {
  if (tensor.device != kernels::Device::kCpu || tensor.dtype != DType::kF32 ||
      !tensor.contiguous()) {
    return absl::InvalidArgumentError(
        "the deterministic all-reduce joins contiguous fp32 host memory");
  }
  return absl::OkStatus();
}

absl::Status RequireTreeSize(int p) {
  if (p != 1 && p != 2 && p != 4 && p != 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("the deterministic all-reduce needs 1, 2, 4 or 8 ranks, the group has ", p));
  }
  return absl::OkStatus();
}

// A subgroup's collectives as its parent's, with nothing sent outside it.
class SubgroupView final : public Communicator {
 public:
  SubgroupView(Communicator* parent, std::vector<int> members, int rank)
      : parent_(parent), members_(std::move(members)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  bool takes_device_buffers() const override { return parent_->takes_device_buffers(); }
  bool records_into_graphs() const override { return parent_->records_into_graphs(); }

  absl::Status AllGather(const kernels::Tensor&, const kernels::Tensor&) override {
    return Unsupported("all-gather");
  }
  absl::Status AllGatherV(const kernels::Tensor&, absl::Span<const int64_t>,
                          const kernels::Tensor&) override {
    return Unsupported("all-gather");
  }
  absl::Status Gather(const kernels::Tensor&, const kernels::Tensor&, int) override {
    return Unsupported("gather");
  }
  absl::Status Broadcast(const kernels::Tensor&, int) override { return Unsupported("broadcast"); }
  absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                         const kernels::Tensor& out,
                         absl::Span<const int64_t> recv_counts) override {
    if (send_counts.size() != members_.size() || recv_counts.size() != members_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("a subgroup of ", members_.size(),
                                                     " ranks got ", send_counts.size(), " counts"));
    }
    std::vector<int64_t> send(parent_->size(), 0), recv(parent_->size(), 0);
    for (size_t j = 0; j < members_.size(); ++j) {
      send[members_[j]] = send_counts[j];
      recv[members_[j]] = recv_counts[j];
    }
    return Counted([&] { return parent_->AllToAllV(in, send, out, recv); });
  }
  absl::Status Barrier() override {
    return Counted([&] { return parent_->Barrier(); });
  }
  absl::Status DeterministicAllReduce(const kernels::Tensor& data) override {
    return Counted([&] { return parent_->SubgroupAllReduce(data, members_); });
  }
  absl::Status SubgroupAllReduce(const kernels::Tensor&, absl::Span<const int>) override {
    return Unsupported("subgroup of a subgroup");
  }

 private:
  static absl::Status Unsupported(const char* what) {
    return absl::UnimplementedError(
        absl::StrCat("a subgroup runs all-to-alls and all-reduces only, not a ", what));
  }
  // Runs a parent collective and counts what it moved here too.
  template <typename Call>
  absl::Status Counted(Call call) {
    const uint64_t sent = parent_->bytes_sent(), received = parent_->bytes_received();
    const double seconds = parent_->seconds();
    const absl::Status status = call();
    CountBytes(parent_->bytes_sent() - sent, parent_->bytes_received() - received);
    CountSeconds(parent_->seconds() - seconds);
    return status;
  }

  Communicator* parent_;
  std::vector<int> members_;
  int rank_;
};

}  // namespace

std::unique_ptr<Communicator> Communicator::Subgroup(std::vector<int> members) {
  const int me =
      static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin());
  SHIFT_CHECK(me < static_cast<int>(members.size()), "rank ", rank(),
              " is not a member of its subgroup");
  return std::make_unique<SubgroupView>(this, std::move(members), me);
}

absl::Status Communicator::DeterministicAllReduce(const kernels::Tensor& tensor) {
  const int p = size();
  SHIFT_RETURN_IF_ERROR(RequireTreeSize(p));
  if (p == 1) return absl::OkStatus();
  SHIFT_RETURN_IF_ERROR(RequireHostF32(tensor));
  const std::vector<int64_t> slice = ReduceSlices(tensor.size(), p);
  const int64_t mine = slice[rank()];
  const std::vector<int64_t> from_each(p, mine);
  std::vector<float> received(mine * p);
  SHIFT_RETURN_IF_ERROR(
      AllToAllV(tensor, slice, kernels::HostTensor(received.data(), mine * p), from_each));
  std::vector<float> joined(mine), values(p);
  for (int64_t e = 0; e < mine; ++e) {
    for (int r = 0; r < p; ++r) values[r] = received[r * mine + e];
    joined[e] = kernels::cpu::JoinSubtrees(values.data(), p);
  }
  return AllGatherV(kernels::HostTensor(joined.data(), mine), slice, tensor);
}

absl::Status Communicator::SubgroupAllReduce(const kernels::Tensor& tensor,
                                             absl::Span<const int> members) {
  const int q = static_cast<int>(members.size());
  if (q == size()) return DeterministicAllReduce(tensor);
  SHIFT_RETURN_IF_ERROR(RequireTreeSize(q));
  if (q == 1) return absl::OkStatus();
  SHIFT_RETURN_IF_ERROR(RequireHostF32(tensor));
  SHIFT_ASSIGN_OR_RETURN(const SubgroupExchange x, PlanSubgroupExchange(tensor.size(), members));
  const int64_t mine = x.mine;
  std::vector<float> received(mine * q);
  SHIFT_RETURN_IF_ERROR(
      AllToAllV(tensor, x.out_send, kernels::HostTensor(received.data(), mine * q), x.out_recv));
  // Each member's joined slice goes back to every member (an all-gather's
  // bytes, as an all-to-all of the slice repeated).
  std::vector<float> joined(mine * q), values(q);
  for (int64_t e = 0; e < mine; ++e) {
    for (int j = 0; j < q; ++j) values[j] = received[j * mine + e];
    joined[e] = kernels::cpu::JoinSubtrees(values.data(), q);
  }
  for (int j = 1; j < q; ++j)
    std::copy(joined.begin(), joined.begin() + mine, joined.begin() + j * mine);
  return AllToAllV(kernels::HostTensor(joined.data(), mine * q), x.back_send, tensor, x.back_recv);
}

absl::StatusOr<Communicator::SubgroupExchange> Communicator::PlanSubgroupExchange(
    int64_t n, absl::Span<const int> members) const {
  const int q = static_cast<int>(members.size());
  const int me =
      static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin());
  if (me == q) return absl::InvalidArgumentError("this rank is not among the members");
  // Slices as DeterministicAllReduce's, over the members.
  const std::vector<int64_t> slice = ReduceSlices(n, q);
  SubgroupExchange x;
  x.mine = slice[me];
  x.out_send.assign(size(), 0);
  x.out_recv.assign(size(), 0);
  x.back_send.assign(size(), 0);
  x.back_recv.assign(size(), 0);
  for (int j = 0; j < q; ++j) {
    x.out_send[members[j]] = slice[j];
    x.out_recv[members[j]] = x.mine;
    x.back_send[members[j]] = x.mine;
    x.back_recv[members[j]] = slice[j];
  }
  return x;
}

}  // namespace shift
