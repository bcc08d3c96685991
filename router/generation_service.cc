#include "router/generation_service.h"

#include <algorithm>
#include <chrono>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/defaults.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace shift {
namespace {

// Reads a varint at `*at`; false at the end of the data or past 10 bytes.
bool ReadVarint(absl::string_view wire, size_t* at, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *at < wire.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(wire[(*at)++]);
    *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Walks the fields of one message: calls `field(number, wire_type,
// payload)` for each (payload: the bytes of a length-delimited field, else
// empty). False for bytes that are not a well-formed message.
template <typename Fn>
bool ForEachField(absl::string_view wire, Fn&& field) {
  size_t at = 0;
  while (at < wire.size()) {
    uint64_t key, value;
    if (!ReadVarint(wire, &at, &key)) return false;
    const uint32_t number = static_cast<uint32_t>(key >> 3);
    absl::string_view payload;
    switch (key & 7) {
      case 0:
        if (!ReadVarint(wire, &at, &value)) return false;
        break;
      case 1:
        if (wire.size() - at < 8) return false;
        at += 8;
        break;
      case 2:
        if (!ReadVarint(wire, &at, &value) || value > wire.size() - at) return false;
        payload = wire.substr(at, value);
        at += value;
        break;
      case 5:
        if (wire.size() - at < 4) return false;
        at += 4;
        break;
      default:
        return false;
    }
    if (!field(number, key & 7, payload)) return false;
  }
  return true;
}

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ByteBuffer Serialize(const v1::GenerateResponse& response) {
  const std::string bytes = response.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// One Generate call: the router's sink on one side, gRPC writes on the
// other. Deletes itself in OnDone, which comes after Finish, which comes
// only once the router will not call the sink again.
class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                              public RequestSink {
 public:
  // The request is validated and tokenized on `admission`'s threads (see
  // admission_pool.h), queued there under `client`.
  GenerateReactor(Router* router, AdmissionPool* admission, grpc::CallbackServerContext* ctx,
                  v1::GenerateRequest request, const std::string& tenant, const std::string& client)
      : router_(router),
        ctx_(ctx),
        max_outbox_(std::max<int64_t>(1, router->options().max_undelivered_deltas)) {
    absl::MutexLock lock(&mu_);
    admitting_ = true;
    const absl::Status queued = admission->Add(
        client, [this, request = std::move(request), tenant] { Admit(request, tenant); });
    if (!queued.ok()) {
      admitting_ = false;
      FinishOnce(ToGrpc(queued));
    }
  }

  bool OnDelta(v1::GenerateDelta delta) override {
    v1::GenerateResponse response;
    *response.mutable_delta() = std::move(delta);
    absl::MutexLock lock(&mu_);
    Queue(std::move(response));
    // Full: the router pauses the request until OnWriteDone drains half.
    paused_ = static_cast<int64_t>(outbox_.size()) >= max_outbox_;
    return !paused_;
  }
  void OnFinal(v1::GenerateFinal final) override {
    v1::GenerateResponse response;
    *response.mutable_final() = std::move(final);
    absl::MutexLock lock(&mu_);
    router_done_ = true;
    Queue(std::move(response));
  }
  void OnError(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    router_done_ = true;
    status_ = ToGrpc(status);
    // The status goes out after what is queued (OnWriteDone finishes).
    if (!writing_) {
      FinishOnce(status_);
    } else if (paused_) {
      // The client stopped reading (a stalled stream, or any error while
      // its window is shut): the status could only follow a write that flow
      // control may hold forever, with the call's memory. The call is
      // cancelled outright (RST_STREAM); the pending write then fails and
      // OnCancel finishes it.
      ctx_->TryCancel();
    }
  }

  void OnWriteDone(bool ok) override {
    bool resume = false;
    uint64_t id = 0;
    {
      absl::MutexLock lock(&mu_);
      outbox_.pop_front();
      writing_ = false;
      if (!ok) return;  // the client is gone: OnCancel follows
      if (!outbox_.empty()) {
        WriteNext();
      } else if (router_done_) {
        FinishOnce(status_);
      }
      if (paused_ && !router_done_ && static_cast<int64_t>(outbox_.size()) <= max_outbox_ / 2) {
        paused_ = false;
        resume = true;
        id = id_;
      }
    }
    if (resume) router_->Resume(id);
  }
  void OnCancel() override {
    bool submitted;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      // Admit ends the call once it has run: the call must not finish (and
      // this object go) while the admission thread may still use it.
      if (admitting_) return;
      submitted = submitted_;
    }
    EndCancelled(submitted);
  }
  void OnDone() override { delete this; }

 private:
  // On an admission thread: the router's Submit, then the call goes on as
  // if it had been submitted in the constructor.
  void Admit(const v1::GenerateRequest& request, const std::string& tenant) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) {
        admitting_ = false;
        router_done_ = true;
        FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
        return;
      }
    }
    absl::StatusOr<uint64_t> id = router_->Submit(request, this, tenant);
    {
      absl::MutexLock lock(&mu_);
      admitting_ = false;
      if (!id.ok()) {
        FinishOnce(ToGrpc(id.status()));
        return;
      }
      id_ = *id;
      submitted_ = true;
      // The id the router's log lines carry (also in the final message);
      // metadata takes printable ASCII only.
      const std::string rid = Router::RequestId(request, id_);
      if (std::all_of(rid.begin(), rid.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
        ctx_->AddTrailingMetadata("x-request-id", rid);
      }
      if (!cancelled_) return;
    }
    EndCancelled(/*submitted=*/true);
  }

  // The client went away: the router frees the request's blocks.
  void EndCancelled(bool submitted) {
    if (submitted) {
      // The client cancels at its own deadline, which the server's (the
      // remaining timeout from when the call arrived) trails by the network
      // latency: a cancel that close to the deadline is the deadline's.
      const bool deadline =
          ctx_->deadline() <= std::chrono::system_clock::now() + std::chrono::milliseconds(100);
      router_->Cancel(
          id_, deadline ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kCancelled);
    }
    absl::MutexLock lock(&mu_);
    router_done_ = true;
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
  }

  void Queue(v1::GenerateResponse response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    outbox_.push_back(Serialize(response));
    if (!writing_) WriteNext();
  }
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    StartWrite(&outbox_.front());
  }
  void FinishOnce(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  Router* router_;
  grpc::CallbackServerContext* ctx_;
  const int64_t max_outbox_;
  absl::Mutex mu_;
  uint64_t id_ ABSL_GUARDED_BY(mu_) = 0;
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;
  bool admitting_ ABSL_GUARDED_BY(mu_) = false;  // queued or running in the admission pool
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<grpc::ByteBuffer> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool router_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;  // told the router it is full
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// A Generate call refused before it reaches the router.
class RefusedReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedReactor(const absl::Status& status) { Finish(ToGrpc(status)); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                      const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

}  // namespace

absl::Status ParseGenerateRequest(absl::string_view wire, int64_t max_stop_strings,
                                  int64_t max_stop_bytes, v1::GenerateRequest* out) {
  int64_t stops = 0, stop_bytes = 0;
  const bool well_formed =
      ForEachField(wire, [&](uint32_t number, uint64_t type, absl::string_view payload) {
        if (number != 4 || type != 2) return true;  // only sampling holds stop strings
        return ForEachField(payload, [&](uint32_t inner, uint64_t inner_type, absl::string_view s) {
          if (inner == 6 && inner_type == 2) {
            ++stops;
            stop_bytes += static_cast<int64_t>(s.size());
          }
          return true;
        });
      });
  if (!well_formed) {
    return absl::InvalidArgumentError("the request is not a shift.v1.GenerateRequest");
  }
  // Counted before parsing, refused with the same words as Router::Validate.
  if (stops > max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.stop has ", stops, " strings, more than the ", max_stop_strings, " allowed"));
  }
  if (stop_bytes > max_stop_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.stop has ", stop_bytes, " bytes, more than the ", max_stop_bytes, " allowed"));
  }
  if (!out->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return absl::InvalidArgumentError("the request is not a shift.v1.GenerateRequest");
  }
  return absl::OkStatus();
}

GenerationService::GenerationService(Router* router, AdmissionLanes* lanes,
                                     Authenticator authenticate)
    : router_(router), lanes_(lanes), authenticate_(std::move(authenticate)) {}

GenerationService::~GenerationService() = default;

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::Generate(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* request) {
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) return new RefusedReactor(tenant.status());
  grpc::Slice slice;
  if (!request->TrySingleSlice(&slice).ok() && !request->DumpToSingleSlice(&slice).ok()) {
    return new RefusedReactor(absl::InvalidArgumentError("the request could not be read"));
  }
  const absl::string_view wire(reinterpret_cast<const char*>(slice.begin()), slice.size());
  v1::GenerateRequest parsed;
  const absl::Status status = ParseGenerateRequest(wire, router_->options().max_stop_strings,
                                                   router_->options().max_stop_bytes, &parsed);
  if (!status.ok()) return new RefusedReactor(status);
  // Bounded per client: the tenant, else the peer's address without its port.
  std::string client = *tenant;
  if (client.empty()) {
    client = ctx->peer();
    if (const size_t colon = client.rfind(':'); colon != std::string::npos) client.resize(colon);
  }
  AdmissionPool* lane =
      lanes_->For(parsed.has_text() ? static_cast<int64_t>(parsed.text().size()) : 0);
  return new GenerateReactor(router_, lane, ctx, std::move(parsed), *tenant, client);
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                          const v1::GetModelInfoRequest*,
                                                          v1::ModelInfo* response) {
  const absl::Status status = Authenticate(*ctx).status();
  if (status.ok()) *response = router_->ModelInfo();
  return FinishUnary(ctx, status);
}

grpc::ServerUnaryReactor* GenerationService::GetStatus(grpc::CallbackServerContext* ctx,
                                                       const v1::GetStatusRequest*,
                                                       v1::ServerStatus* response) {
  const absl::Status status = Authenticate(*ctx).status();
  if (status.ok()) *response = router_->Status();
  return FinishUnary(ctx, status);
}

}  // namespace shift
