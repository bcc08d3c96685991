// shift.v1.Generation over gRPC's callback API: one self-deleting write
// reactor per Generate call (one write in flight, nothing blocking inside a
// callback, OnCancel wired to the router so a departed client's blocks are
// freed), and unary GetModelInfo / GetStatus. All the work is the Router's.
// Every call passes the authenticator first (API keys, when configured).
#pragma once

#include <functional>

#include "router/router.h"
#include "shift/v1/generation.grpc.pb.h"

namespace shift {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // The caller's tenant ("" when keys name none), or the status a call is
  // refused with (UNAUTHENTICATED).
  using Authenticator = std::function<absl::StatusOr<std::string>(const grpc::ServerContextBase&)>;

  explicit GenerationService(Router* router, Authenticator authenticate = nullptr)
      : router_(router), authenticate_(std::move(authenticate)) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const v1::GetStatusRequest* request,
                                      v1::ServerStatus* response) override;

 private:
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& ctx) const {
    return authenticate_ ? authenticate_(ctx) : std::string();
  }

  Router* router_;
  Authenticator authenticate_;
};

}  // namespace shift
