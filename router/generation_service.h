// shift.v1.Generation over gRPC's callback API: one self-deleting write
// reactor per Generate call (one write in flight, nothing blocking inside a
// callback: requests are tokenized on an AdmissionPool's threads, OnCancel wired to the router so a
// departed client's blocks are freed), and unary GetModelInfo / GetStatus. All the work is the
// Router's. Every call passes the authenticator first (API keys, when configured). Generate takes
// its request as raw bytes: ParseGenerateRequest counts the stop strings on the wire before
// anything is parsed, since a message of 4 MiB holding a million one-byte strings would otherwise
// parse into hundreds of MiB before validation could refuse it.
#pragma once

#include <functional>
#include <memory>

#include "absl/strings/string_view.h"
#include "router/admission_pool.h"
#include "router/router.h"
#include "shift/v1/generation.grpc.pb.h"

namespace shift {

// Parses a GenerateRequest from its wire bytes, refusing (INVALID_ARGUMENT)
// one with more than `max_stop_strings` stop strings or more than
// `max_stop_bytes` of them before it materializes them, and bytes that are
// not a GenerateRequest.
absl::Status ParseGenerateRequest(absl::string_view wire, int64_t max_stop_strings,
                                  int64_t max_stop_bytes, v1::GenerateRequest* out);

class GenerationService final
    : public v1::Generation::WithRawCallbackMethod_Generate<
          v1::Generation::WithCallbackMethod_GetModelInfo<
              v1::Generation::WithCallbackMethod_GetStatus<v1::Generation::Service>>> {
 public:
  // The caller's tenant ("" when keys name none), or the status a call is
  // refused with (UNAUTHENTICATED).
  using Authenticator = std::function<absl::StatusOr<std::string>(const grpc::ServerContextBase&)>;

  // Requests are validated and tokenized on `lanes`' threads, off gRPC's.
  GenerationService(Router* router, AdmissionLanes* lanes, Authenticator authenticate = nullptr);
  ~GenerationService() override;

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* request) override;
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
  AdmissionLanes* lanes_;
  Authenticator authenticate_;
};

}  // namespace shift
