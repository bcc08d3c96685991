#include "router/generation_service.h"

#include <algorithm>
#include <chrono>
#include <deque>

#include "absl/synchronization/mutex.h"

namespace shift {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// One Generate call: the router's sink on one side, gRPC writes on the
// other. Deletes itself in OnDone, which comes after Finish, which comes
// only once the router will not call the sink again.
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                              public RequestSink {
 public:
  GenerateReactor(Router* router, grpc::CallbackServerContext* ctx,
                  const v1::GenerateRequest& request, const std::string& tenant)
      : router_(router),
        ctx_(ctx),
        max_outbox_(std::max<int64_t>(1, router->options().max_undelivered_deltas)) {
    absl::StatusOr<uint64_t> id = router_->Submit(request, this, tenant);
    absl::MutexLock lock(&mu_);
    if (!id.ok()) {
      FinishOnce(ToGrpc(id.status()));
      return;
    }
    id_ = *id;
    submitted_ = true;
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
    if (!writing_) FinishOnce(status_);
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
      submitted = submitted_;
    }
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
  void OnDone() override { delete this; }

 private:
  void Queue(v1::GenerateResponse response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    outbox_.push_back(std::move(response));
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
  std::deque<v1::GenerateResponse> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool router_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;  // told the router it is full
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// A Generate call refused before it reaches the router.
class RefusedReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
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

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  absl::StatusOr<std::string> tenant = Authenticate(*ctx);
  if (!tenant.ok()) return new RefusedReactor(tenant.status());
  return new GenerateReactor(router_, ctx, *request, *tenant);
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
