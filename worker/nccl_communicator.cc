#include "worker/nccl_communicator.h"

#include "absl/strings/str_cat.h"

#if SHIFT_HAVE_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "kernels/cuda/runtime.h"
#endif

namespace shift {

#if !SHIFT_HAVE_CUDA

namespace {
absl::Status NoCuda() {
  return absl::UnimplementedError("NCCL needs a CUDA build (nvcc was not found at build time)");
}
}  // namespace

absl::StatusOr<std::string> NcclVersion() { return NoCuda(); }
absl::StatusOr<std::string> NewNcclUniqueId() { return NoCuda(); }
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const NcclOptions&) {
  return NoCuda();
}

#else

namespace {

// The NCCL entry points shift calls, from the library loaded at run time.
struct NcclApi {
  decltype(&ncclGetVersion) GetVersion;
  decltype(&ncclGetUniqueId) GetUniqueId;
  decltype(&ncclCommInitRankConfig) CommInitRankConfig;
  decltype(&ncclCommFinalize) CommFinalize;
  decltype(&ncclCommDestroy) CommDestroy;
  decltype(&ncclCommAbort) CommAbort;
  decltype(&ncclCommGetAsyncError) CommGetAsyncError;
  decltype(&ncclGetErrorString) GetErrorString;
  decltype(&ncclAllGather) AllGather;
  decltype(&ncclAllReduce) AllReduce;
  decltype(&ncclBroadcast) Broadcast;
  decltype(&ncclSend) Send;
  decltype(&ncclRecv) Recv;
  decltype(&ncclGroupStart) GroupStart;
  decltype(&ncclGroupEnd) GroupEnd;
  // 2.18+; null before (hybrid layouts then need host-staged collectives).
  decltype(&ncclCommSplit) CommSplit;
};

absl::StatusOr<const NcclApi*> LoadNccl() {
  static NcclApi api;
  static absl::Status status = [] {
    kernels::cuda::RuntimeLibrary lib({"libnccl.so.2", "libnccl.so"});
    if (!lib.loaded()) {
      return absl::UnavailableError(
          absl::StrCat("cannot load NCCL (libnccl.so.2): ", lib.why(),
                       "; install NCCL or put its directory on LD_LIBRARY_PATH"));
    }
    lib.Get(&api.GetVersion, "ncclGetVersion");
    lib.Get(&api.GetUniqueId, "ncclGetUniqueId");
    lib.Get(&api.CommInitRankConfig, "ncclCommInitRankConfig");
    lib.Get(&api.CommFinalize, "ncclCommFinalize");
    lib.Get(&api.CommDestroy, "ncclCommDestroy");
    lib.Get(&api.CommAbort, "ncclCommAbort");
    lib.Get(&api.CommGetAsyncError, "ncclCommGetAsyncError");
    lib.Get(&api.GetErrorString, "ncclGetErrorString");
    lib.Get(&api.AllGather, "ncclAllGather");
    lib.Get(&api.AllReduce, "ncclAllReduce");
    lib.Get(&api.Broadcast, "ncclBroadcast");
    lib.Get(&api.Send, "ncclSend");
    lib.Get(&api.Recv, "ncclRecv");
    lib.Get(&api.GroupStart, "ncclGroupStart");
    lib.Get(&api.GroupEnd, "ncclGroupEnd");
    if (!lib.complete()) {
      return absl::UnavailableError("NCCL lacks an entry point shift needs (2.14+)");
    }
    lib.Get(&api.CommSplit, "ncclCommSplit");
    return absl::OkStatus();
  }();
  if (!status.ok()) return status;
  return &api;
}

absl::StatusOr<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kF8E4M3:
      return ncclUint8;  // moved, never reduced
  }
  return absl::InvalidArgumentError("no NCCL type for this dtype");
}

// A new communicator, made by `create` (ncclCommInitRankConfig or
// ncclCommSplit, non-blocking), and its one-float scratch buffer: waits up
// to `timeout_s` for the other ranks; on failure the communicator is
// aborted and UNAVAILABLE names `what`.
struct NewComm {
  ncclComm_t comm = nullptr;
  float* scratch = nullptr;
};
absl::StatusOr<NewComm> CreateComm(
    const NcclApi* api, double timeout_s, const std::string& what,
    const std::function<ncclResult_t(ncclComm_t*, ncclConfig_t*)>& create) {
  NewComm made;
  if (const cudaError_t e = cudaMalloc(&made.scratch, sizeof(float)); e != cudaSuccess) {
    return absl::ResourceExhaustedError(absl::StrCat("NCCL scratch: ", cudaGetErrorString(e)));
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = create(&made.comm, &config);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_s));
  while (r == ncclInProgress && made.comm != nullptr) {
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::yield();
    api->CommGetAsyncError(made.comm, &r);
  }
  if (r != ncclSuccess) {
    if (made.comm != nullptr) api->CommAbort(made.comm);
    cudaFree(made.scratch);
    return absl::UnavailableError(absl::StrCat(
        what, " failed: ",
        r == ncclInProgress ? "timed out waiting for the other ranks" : api->GetErrorString(r)));
  }
  return made;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclApi* api, const NcclOptions& options, ncclComm_t comm, float* scratch)
      : api_(api), options_(options), comm_(comm), scratch_(scratch) {}

  ~NcclCommunicator() override {
    subgroups_.clear();  // split from this one: gone first
    // An aborted communicator is gone already; a healthy one finalizes
    // (non-blocking: Settle waits, and aborts it if that fails) and is
    // destroyed.
    if (!broken_) {
      api_->CommFinalize(comm_);
      if (Settle("finalize").ok()) api_->CommDestroy(comm_);
    }
    cudaFree(scratch_);
  }

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  bool takes_device_buffers() const override { return true; }
  bool records_into_graphs() const override { return true; }

  absl::Status AllGather(const kernels::Tensor& in, const kernels::Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&in, &out}));
    if (out.size() != in.size() * size() || in.dtype != out.dtype) {
      return absl::InvalidArgumentError("AllGather: out must hold size() copies of in");
    }
    SHIFT_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(in.dtype));
    return Run("all-gather", in.bytes() * (size() - 1), in.bytes() * (size() - 1), [&] {
      return api_->AllGather(in.data, out.data, static_cast<size_t>(in.size()), type, comm_,
                             Stream());
    });
  }

  absl::Status AllGatherV(const kernels::Tensor& in, absl::Span<const int64_t> counts,
                          const kernels::Tensor& out) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&in, &out}));
    if (static_cast<int>(counts.size()) != size() || counts[rank()] != in.size()) {
      return absl::InvalidArgumentError("AllGatherV: one count per rank, ours the input's size");
    }
    std::vector<int64_t> same(size(), in.size());
    return Exchange("all-gather-v", in, same, out, counts, /*root=*/-1, /*whole_input=*/true);
  }

  absl::Status Gather(const kernels::Tensor& in, const kernels::Tensor& out, int root) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&in}));
    if (rank() == root) {
      SHIFT_RETURN_IF_ERROR(CheckDevice({&out}));
      if (out.size() != in.size() * size()) {
        return absl::InvalidArgumentError("Gather: out must hold size() copies of in");
      }
    }
    std::vector<int64_t> counts(size(), in.size());
    return Exchange("gather", in, counts, out, counts, root);
  }

  // In place, bytes as they are (ncclBroadcast of the buffer's type moves
  // them without arithmetic).
  absl::Status Broadcast(const kernels::Tensor& data, int root) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&data}));
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("broadcast from rank ", root, " of ", size()));
    }
    SHIFT_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(data.dtype));
    const bool is_root = rank() == root;
    return Run("broadcast", is_root ? data.bytes() * (size() - 1) : 0, is_root ? 0 : data.bytes(),
               [&] {
                 return api_->Broadcast(data.data, data.data, static_cast<size_t>(data.size()),
                                        type, root, comm_, Stream());
               });
  }

  absl::Status AllToAllV(const kernels::Tensor& in, absl::Span<const int64_t> send_counts,
                         const kernels::Tensor& out,
                         absl::Span<const int64_t> recv_counts) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&in, &out}));
    return Exchange("all-to-all", in, send_counts, out, recv_counts, /*root=*/-1);
  }

  // The TP all-reduce on the device: NCCL's sum in the buffer's type, in
  // place. Not the CPU's canonical tree (docs/architecture.md, Determinism):
  // the same group, sizes and NCCL settings give the same bits run to run,
  // and modes agree within tolerance.
  absl::Status DeterministicAllReduce(const kernels::Tensor& data) override {
    SHIFT_RETURN_IF_ERROR(CheckDevice({&data}));
    SHIFT_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(data.dtype));
    if (data.dtype == DType::kF8E4M3) {
      return absl::InvalidArgumentError("the all-reduce does not sum FP8 values");
    }
    // A ring all-reduce's traffic: 2 (P - 1) / P of the buffer each way.
    const int64_t moved = 2 * data.bytes() * (size() - 1) / size();
    return Run("all-reduce", moved, moved, [&] {
      return api_->AllReduce(data.data, data.data, static_cast<size_t>(data.size()), type, ncclSum,
                             comm_, Stream());
    });
  }

  // A hybrid layout's TP subgroup all-reduce: NCCL's sum on a communicator
  // of the members only, split from this one the first time (every rank
  // splits at once, each into its own subgroup: the subgroups partition
  // the ranks) and kept. Its traffic is counted here too.
  absl::Status SubgroupAllReduce(const kernels::Tensor& data,
                                 absl::Span<const int> members) override {
    if (static_cast<int>(members.size()) == size()) return DeterministicAllReduce(data);
    if (members.size() <= 1) return absl::OkStatus();
    SHIFT_RETURN_IF_ERROR(CheckDevice({&data}));
    const std::vector<int> key(members.begin(), members.end());
    auto it = subgroups_.find(key);
    if (it == subgroups_.end()) {
      SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> sub, Split(key));
      it = subgroups_.emplace(key, std::move(sub)).first;
    }
    NcclCommunicator& sub = *it->second;
    const CollectiveTraffic before = sub.traffic();
    const absl::Status status = sub.DeterministicAllReduce(data);
    const CollectiveTraffic after = sub.traffic();
    CountBytes(after.bytes_sent - before.bytes_sent, after.bytes_received - before.bytes_received);
    CountSeconds(after.seconds - before.seconds);
    if (!status.ok()) return Abort("subgroup all-reduce", std::string(status.message()));
    return status;
  }

  absl::Status Barrier() override {
    return Run("barrier", sizeof(float), sizeof(float), [&] {
      return api_->AllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, Stream());
    });
  }

 private:
  cudaStream_t Stream() const { return static_cast<cudaStream_t>(options_.stream); }

  // A communicator of `members` (this rank among them), split from this one.
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> Split(const std::vector<int>& members) {
    if (api_->CommSplit == nullptr) {
      return absl::UnimplementedError(
          "this NCCL has no ncclCommSplit (2.18+), which a hybrid --sp_degree needs: upgrade "
          "NCCL or use host-staged collectives (--collectives=staged)");
    }
    const int me =
        static_cast<int>(std::find(members.begin(), members.end(), rank()) - members.begin());
    if (me == static_cast<int>(members.size())) {
      return absl::InvalidArgumentError("this rank is not among the subgroup's members");
    }
    // The subgroup's smallest rank names it; its order numbers the members.
    const int color = *std::min_element(members.begin(), members.end());
    SHIFT_ASSIGN_OR_RETURN(
        NewComm made,
        CreateComm(api_, options_.timeout_s, absl::StrCat("NCCL split of rank ", rank()),
                   [&](ncclComm_t* comm, ncclConfig_t* config) {
                     return api_->CommSplit(comm_, color, me, comm, config);
                   }));
    NcclOptions options = options_;
    options.rank = me;
    options.size = static_cast<int>(members.size());
    return std::make_unique<NcclCommunicator>(api_, options, made.comm, made.scratch);
  }

  absl::Status CheckDevice(std::initializer_list<const kernels::Tensor*> tensors) {
    if (broken_) {
      return absl::UnavailableError("the NCCL communicator was aborted; the group must re-form");
    }
    for (const kernels::Tensor* t : tensors) {
      if (t->device != kernels::Device::kCuda || !t->contiguous()) {
        return absl::InvalidArgumentError("NCCL moves contiguous CUDA device buffers");
      }
    }
    return absl::OkStatus();
  }

  // Waits (within the deadline) until the communicator has no operation in
  // progress; an error or the deadline aborts it.
  absl::Status Settle(const char* what) {
    const auto deadline = Deadline();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t got = api_->CommGetAsyncError(comm_, &state);
      if (got != ncclSuccess) state = got;
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return Abort(what, api_->GetErrorString(state));
      if (std::chrono::steady_clock::now() > deadline) return Abort(what, "timed out");
      std::this_thread::yield();
    }
  }

  std::chrono::steady_clock::time_point Deadline() const {
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
               std::chrono::duration<double>(options_.timeout_s));
  }

  absl::Status Abort(const char* what, const std::string& why) {
    if (!broken_) {
      broken_ = true;
      api_->CommAbort(comm_);
    }
    return absl::UnavailableError(absl::StrCat("NCCL ", what, " failed on rank ", rank(), ": ", why,
                                               "; the communicator is aborted"));
  }

  // Enqueues `enqueue` (NCCL calls), then waits for NCCL and the stream.
  template <typename F>
  absl::Status Run(const char* what, int64_t sent, int64_t received, F enqueue) {
    const auto start = std::chrono::steady_clock::now();
    const ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) return Abort(what, api_->GetErrorString(r));
    SHIFT_RETURN_IF_ERROR(Settle(what));
    // While the stream is being captured into a CUDA graph, the work is
    // recorded, not run: the graph's launch runs it, and querying the
    // stream now would invalidate the capture.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(Stream(), &capture) == cudaSuccess &&
        capture == cudaStreamCaptureStatusActive) {
      CountBytes(static_cast<uint64_t>(sent), static_cast<uint64_t>(received));
      return absl::OkStatus();
    }
    // The work is on the stream: wait for it, watching for NCCL errors.
    const auto deadline = Deadline();
    for (;;) {
      const cudaError_t q = cudaStreamQuery(Stream());
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) return Abort(what, cudaGetErrorString(q));
      ncclResult_t state = ncclSuccess;
      api_->CommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        return Abort(what, api_->GetErrorString(state));
      }
      if (std::chrono::steady_clock::now() > deadline) return Abort(what, "timed out");
      std::this_thread::yield();
    }
    CountBytes(static_cast<uint64_t>(sent), static_cast<uint64_t>(received));
    CountSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return absl::OkStatus();
  }

  // Point-to-point exchange in one NCCL group: send_counts[r] consecutive
  // elements of `in` to each rank r, recv_counts[r] from each into `out`
  // consecutively. With root >= 0, only the root receives (a gather); with
  // `whole_input`, every peer gets all of `in` (an all-gather-v).
  absl::Status Exchange(const char* what, const kernels::Tensor& in,
                        absl::Span<const int64_t> send_counts, const kernels::Tensor& out,
                        absl::Span<const int64_t> recv_counts, int root, bool whole_input = false) {
    const int p = size(), me = rank();
    if (static_cast<int>(send_counts.size()) != p || static_cast<int>(recv_counts.size()) != p) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": one count per rank"));
    }
    SHIFT_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(in.dtype));
    const int64_t es = static_cast<int64_t>(DTypeSize(in.dtype));
    std::vector<int64_t> send_at(p, 0), recv_at(p, 0);
    int64_t total_send = 0, total_recv = 0;
    for (int r = 0; r < p; ++r) {
      send_at[r] = whole_input ? 0 : total_send;
      recv_at[r] = total_recv;
      total_send += whole_input ? 0 : send_counts[r];
      total_recv += recv_counts[r];
    }
    if (!whole_input && total_send > in.size()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": send counts exceed the input"));
    }
    const bool receives = root < 0 || root == me;
    if (receives && total_recv > out.size()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": receive counts exceed the output"));
    }
    int64_t sent = 0, received = 0;
    for (int peer = 0; peer < p; ++peer) {
      if (peer == me) continue;
      if (root < 0 || peer == root) sent += send_counts[peer] * es;
      if (receives) received += recv_counts[peer] * es;
    }
    auto* src = static_cast<const char*>(in.data);
    auto* dst = static_cast<char*>(out.data);
    // Our own part is a device copy, before the group.
    if (receives && recv_counts[me] > 0) {
      const cudaError_t c =
          cudaMemcpyAsync(dst + recv_at[me] * es, src + send_at[me] * es, recv_counts[me] * es,
                          cudaMemcpyDeviceToDevice, Stream());
      if (c != cudaSuccess) return Abort(what, cudaGetErrorString(c));
    }
    return Run(what, sent, received, [&]() -> ncclResult_t {
      ncclResult_t r = api_->GroupStart();
      for (int peer = 0; peer < p && (r == ncclSuccess || r == ncclInProgress); ++peer) {
        if (peer == me) continue;
        if ((root < 0 || peer == root) && send_counts[peer] > 0) {
          r = api_->Send(src + send_at[peer] * es, static_cast<size_t>(send_counts[peer]), type,
                         peer, comm_, Stream());
        }
        if (receives && recv_counts[peer] > 0 && (r == ncclSuccess || r == ncclInProgress)) {
          r = api_->Recv(dst + recv_at[peer] * es, static_cast<size_t>(recv_counts[peer]), type,
                         peer, comm_, Stream());
        }
      }
      const ncclResult_t end = api_->GroupEnd();
      return r == ncclSuccess || r == ncclInProgress ? end : r;
    });
  }

  const NcclApi* api_;
  NcclOptions options_;
  ncclComm_t comm_;
  float* scratch_;  // one device float for the barrier
  bool broken_ = false;
  // Subgroup communicators by their members (hybrid layouts).
  std::map<std::vector<int>, std::unique_ptr<NcclCommunicator>> subgroups_;
};

}  // namespace

absl::StatusOr<std::string> NcclVersion() {
  SHIFT_ASSIGN_OR_RETURN(const NcclApi* api, LoadNccl());
  int version = 0;
  if (api->GetVersion(&version) != ncclSuccess) return absl::InternalError("ncclGetVersion failed");
  // Since 2.9 the code is major·10000 + minor·100 + patch.
  return absl::StrFormat("%d.%d.%d", version / 10000, version / 100 % 100, version % 100);
}

absl::StatusOr<std::string> NewNcclUniqueId() {
  SHIFT_ASSIGN_OR_RETURN(const NcclApi* api, LoadNccl());
  ncclUniqueId id;
  if (const ncclResult_t r = api->GetUniqueId(&id); r != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("ncclGetUniqueId failed: ", api->GetErrorString(r)));
  }
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const NcclOptions& options) {
  SHIFT_ASSIGN_OR_RETURN(const NcclApi* api, LoadNccl());
  ncclUniqueId id;
  if (options.unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("an NCCL unique id has ", sizeof(id.internal),
                                                   " bytes, not ", options.unique_id.size()));
  }
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError("NCCL: rank must be in [0, size)");
  }
  std::memcpy(id.internal, options.unique_id.data(), sizeof(id.internal));
  if (const cudaError_t e = cudaSetDevice(options.device); e != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("NCCL: CUDA device ", options.device, ": ", cudaGetErrorString(e)));
  }
  SHIFT_ASSIGN_OR_RETURN(
      NewComm made,
      CreateComm(api, options.timeout_s,
                 absl::StrCat("NCCL init of rank ", options.rank, " of ", options.size),
                 [&](ncclComm_t* comm, ncclConfig_t* config) {
                   return api->CommInitRankConfig(comm, options.size, id, options.rank, config);
                 }));
  return std::unique_ptr<Communicator>(new NcclCommunicator(api, options, made.comm, made.scratch));
}

#endif  // SHIFT_HAVE_CUDA

}  // namespace shift
