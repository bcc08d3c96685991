#include "tools/client_flags.h"

#include <cstdlib>

#include "absl/flags/flag.h"
#include "common/security.h"
#include "common/status.h"
#include "grpcpp/create_channel.h"

ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed the router's certificate: connect with TLS (the system's roots "
          "verify it when only --tls_cert is given)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate to present, with --tls_key");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, api_key_file, "",
          "File whose first key is sent as \"authorization: Bearer KEY\" (default: the "
          "SHIFT_API_KEY environment variable, if set)");

namespace shift {

absl::StatusOr<ClientSecurity> ClientSecurityFromFlags() {
  ClientSecurity security;
  const TlsFiles files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                       absl::GetFlag(FLAGS_tls_ca)};
  SHIFT_ASSIGN_OR_RETURN(security.credentials, ChannelCredentials(files));
  security.tls = !files.ca.empty() || !files.cert.empty();
  if (const std::string file = absl::GetFlag(FLAGS_api_key_file); !file.empty()) {
    SHIFT_ASSIGN_OR_RETURN(security.api_key, ReadApiKey(file));
  } else if (const char* key = std::getenv("SHIFT_API_KEY"); key != nullptr) {
    security.api_key = key;
  }
  return security;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address, const ClientSecurity& security) {
  return grpc::CreateChannel(address, security.credentials);
}

}  // namespace shift
