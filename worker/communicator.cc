#include "worker/communicator.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/gemm.h"

namespace shift {

std::vector<int64_t> Communicator::ReduceSlices(int64_t n, int p) {
  std::vector<int64_t> slice(p);
  for (int s = 0; s < p; ++s) slice[s] = n * (s + 1) / p - n * s / p;
  return slice;
}

absl::Status Communicator::DeterministicAllReduce(const kernels::Tensor& tensor) {
  const int p = size();
  if (p != 1 && p != 2 && p != 4 && p != 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("the deterministic all-reduce needs 1, 2, 4 or 8 ranks, the group has ", p));
  }
  if (p == 1) return absl::OkStatus();
  if (tensor.device != kernels::Device::kCpu || tensor.dtype != DType::kF32 ||
      !tensor.contiguous()) {
    return absl::InvalidArgumentError(
        "the deterministic all-reduce joins contiguous fp32 host memory");
  }
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

}  // namespace shift
