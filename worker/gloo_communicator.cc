#include "worker/gloo_communicator.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <exception>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "gloo/allgather.h"
#include "gloo/allgatherv.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/gather.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

namespace shift {
namespace {

uint64_t Bytes(int64_t floats) { return static_cast<uint64_t>(floats) * sizeof(float); }

int64_t Sum(absl::Span<const int64_t> counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

// The fp32 elements of a contiguous host tensor (an empty one has none).
absl::StatusOr<float*> HostFloats(const char* what, const kernels::Tensor& t) {
  if (t.empty()) return static_cast<float*>(t.data);
  if (t.device != kernels::Device::kCpu || t.dtype != DType::kF32 || !t.contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": Gloo moves contiguous fp32 host memory, not ", std::string(DTypeName(t.dtype)),
        " on ", kernels::DeviceName(t.device), t.contiguous() ? "" : " (strided)"));
  }
  return t.As<float>();
}

absl::Status RequireRoom(const char* what, const kernels::Tensor& out, int64_t needed) {
  if (out.size() >= needed) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": the output holds ", out.size(),
                                                 " elements of the ", needed, " needed"));
}

// What a rank writes to the store, with the address records' padding
// zeroed; reads pass through.
class ZeroingStore final : public gloo::rendezvous::Store {
 public:
  explicit ZeroingStore(gloo::rendezvous::Store& inner) : inner_(inner) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    std::vector<char> clean = data;
    ZeroGlooAddressPadding(clean);
    inner_.set(key, clean);
  }
  std::vector<char> get(const std::string& key) override { return inner_.get(key); }
  void wait(const std::vector<std::string>& keys) override { inner_.wait(keys); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    inner_.wait(keys, timeout);
  }

 private:
  gloo::rendezvous::Store& inner_;
};

// gloo::transport::tcp::Address::Impl, as Gloo lays it out.
struct GlooAddressRecord {
  sockaddr_storage ss;
  ssize_t seq;
};

}  // namespace

void ZeroGlooAddressPadding(std::vector<char>& value) {
  constexpr size_t kRecord = sizeof(GlooAddressRecord);
  if (value.empty() || value.size() % kRecord != 0) return;
  for (size_t at = 0; at < value.size(); at += kRecord) {
    sa_family_t family;
    std::memcpy(&family, value.data() + at + offsetof(sockaddr_storage, ss_family), sizeof(family));
    const size_t used = family == AF_INET    ? sizeof(sockaddr_in)
                        : family == AF_INET6 ? sizeof(sockaddr_in6)
                                             : sizeof(sockaddr_storage);
    std::memset(value.data() + at + used, 0, sizeof(sockaddr_storage) - used);
    // Between the address and the sequence number (none on x86-64).
    std::memset(value.data() + at + sizeof(sockaddr_storage), 0,
                offsetof(GlooAddressRecord, seq) - sizeof(sockaddr_storage));
  }
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Connect(
    gloo::rendezvous::Store& store, const std::string& prefix, int rank, int size,
    const std::string& host, std::chrono::milliseconds timeout) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", size));
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    ZeroingStore zeroing(store);
    gloo::rendezvous::PrefixStore prefixed(prefix, zeroing);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(timeout);
    context->connectFullMesh(prefixed, device);
    return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(context, rank, size));
  } catch (const std::exception& e) {
    return absl::DeadlineExceededError(
        absl::StrCat("rank ", rank, " of ", size, " could not connect its group (", prefix,
                     ") within ", timeout.count(), " ms: ", e.what()));
  }
}

template <typename Fn>
absl::Status GlooCommunicator::Run(const char* what, Fn&& fn) {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("communicator is broken since an earlier failure: ", broken_.message()));
  }
  const auto start = std::chrono::steady_clock::now();
  try {
    fn();
    CountSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return absl::OkStatus();
  } catch (const std::exception& e) {
    broken_ = absl::UnavailableError(absl::StrCat(what, " failed on rank ", rank_, ": ", e.what()));
    return broken_;
  }
}

absl::Status GlooCommunicator::AllGather(const kernels::Tensor& in_t,
                                         const kernels::Tensor& out_t) {
  SHIFT_ASSIGN_OR_RETURN(float* in, HostFloats("all-gather", in_t));
  SHIFT_ASSIGN_OR_RETURN(float* out, HostFloats("all-gather", out_t));
  const int64_t n = in_t.size();
  SHIFT_RETURN_IF_ERROR(RequireRoom("all-gather", out_t, n * size_));
  SHIFT_RETURN_IF_ERROR(Run("all-gather", [&] {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(in, n);
    opts.setOutput(out, n * size_);
    gloo::allgather(opts);
  }));
  CountBytes(Bytes(n * (size_ - 1)), Bytes(n * (size_ - 1)));
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllGatherV(const kernels::Tensor& in_t,
                                          absl::Span<const int64_t> counts,
                                          const kernels::Tensor& out_t) {
  if (static_cast<int>(counts.size()) != size_) {
    return absl::InvalidArgumentError("all-gather-v needs one count per rank");
  }
  SHIFT_ASSIGN_OR_RETURN(float* in, HostFloats("all-gather-v", in_t));
  SHIFT_ASSIGN_OR_RETURN(float* out, HostFloats("all-gather-v", out_t));
  const int64_t total = Sum(counts);
  SHIFT_RETURN_IF_ERROR(RequireRoom("all-gather-v", out_t, total));
  SHIFT_RETURN_IF_ERROR(RequireRoom("all-gather-v", in_t, counts[rank_]));
  SHIFT_RETURN_IF_ERROR(Run("all-gather-v", [&] {
    gloo::AllgathervOptions opts(context_);
    opts.setInput(in, counts[rank_]);
    opts.setOutput(out, std::vector<size_t>(counts.begin(), counts.end()));
    gloo::allgatherv(opts);
  }));
  CountBytes(Bytes(counts[rank_] * (size_ - 1)), Bytes(total - counts[rank_]));
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Gather(const kernels::Tensor& in_t, const kernels::Tensor& out_t,
                                      int root) {
  SHIFT_ASSIGN_OR_RETURN(float* in, HostFloats("gather", in_t));
  const int64_t n = in_t.size();
  float* out = nullptr;
  if (rank_ == root) {
    SHIFT_ASSIGN_OR_RETURN(out, HostFloats("gather", out_t));
    SHIFT_RETURN_IF_ERROR(RequireRoom("gather", out_t, n * size_));
  }
  SHIFT_RETURN_IF_ERROR(Run("gather", [&] {
    gloo::GatherOptions opts(context_);
    opts.setInput(in, n);
    if (rank_ == root) opts.setOutput(out, n * size_);
    opts.setRoot(root);
    gloo::gather(opts);
  }));
  if (rank_ == root) {
    CountBytes(0, Bytes(n * (size_ - 1)));
  } else {
    CountBytes(Bytes(n), 0);
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::AllToAllV(const kernels::Tensor& in_t,
                                         absl::Span<const int64_t> send_counts,
                                         const kernels::Tensor& out_t,
                                         absl::Span<const int64_t> recv_counts) {
  if (static_cast<int>(send_counts.size()) != size_ ||
      static_cast<int>(recv_counts.size()) != size_) {
    return absl::InvalidArgumentError("all-to-all-v needs one count per rank");
  }
  SHIFT_ASSIGN_OR_RETURN(float* in, HostFloats("all-to-all-v", in_t));
  SHIFT_ASSIGN_OR_RETURN(float* out, HostFloats("all-to-all-v", out_t));
  SHIFT_RETURN_IF_ERROR(RequireRoom("all-to-all-v", in_t, Sum(send_counts)));
  SHIFT_RETURN_IF_ERROR(RequireRoom("all-to-all-v", out_t, Sum(recv_counts)));
  SHIFT_RETURN_IF_ERROR(Run("all-to-all-v", [&] {
    gloo::AlltoallvOptions opts(context_);
    opts.setInput(in, std::vector<int64_t>(send_counts.begin(), send_counts.end()));
    opts.setOutput(out, std::vector<int64_t>(recv_counts.begin(), recv_counts.end()));
    gloo::alltoallv(opts);
  }));
  CountBytes(Bytes(Sum(send_counts) - send_counts[rank_]),
             Bytes(Sum(recv_counts) - recv_counts[rank_]));
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Broadcast(const kernels::Tensor& data_t, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast from rank ", root, " of ", size_));
  }
  SHIFT_ASSIGN_OR_RETURN(float* data, HostFloats("broadcast", data_t));
  const int64_t n = data_t.size();
  SHIFT_RETURN_IF_ERROR(Run("broadcast", [&] {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(data, n);
    opts.setRoot(root);
    gloo::broadcast(opts);
  }));
  if (rank_ == root) {
    CountBytes(Bytes(n * (size_ - 1)), 0);
  } else {
    CountBytes(0, Bytes(n));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Barrier() {
  return Run("barrier", [&] {
    gloo::BarrierOptions opts(context_);
    gloo::barrier(opts);
  });
}

}  // namespace shift
