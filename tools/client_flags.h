// The flags shiftctl and shift-bench share to reach a router that uses TLS
// or API keys: --tls_ca (verify the router), --tls_cert and --tls_key (a
// client certificate, when asked for one) and --api_key_file (or the
// SHIFT_API_KEY environment variable). Calls send the key with AddApiKey
// (common/security.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/security.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"

namespace shift {

struct ClientSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string api_key;  // empty: none sent
  bool tls = false;
};

// From the flags above; an unreadable file is an error that names it.
absl::StatusOr<ClientSecurity> ClientSecurityFromFlags();

std::shared_ptr<grpc::Channel> Connect(const std::string& address, const ClientSecurity& security);

}  // namespace shift
