// The gRPC side of the trust boundary: TLS credentials from PEM files that
// are re-read when they change on disk, and API tokens.
//
// Servers: `ServerCredentials` is plaintext without a certificate, TLS with
// one, and mutual TLS when a CA is given and client certificates are
// required (the router's internal port). Clients: `ChannelCredentials`
// verifies the server against the CA (or the system roots) and presents a
// certificate when given one. Tokens travel as `authorization: Bearer T`.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/status.h"

namespace grpc {
class ServerContextBase;
class ClientContext;
}  // namespace grpc

namespace shift {

// How often certificate and key files are checked for changes.
inline constexpr unsigned kTlsReloadSeconds = 2;

// PEM files: a certificate chain and its key, and the CA that verifies the
// other side. All optional; `cert` and `key` go together.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
};

// Plaintext without `cert`; TLS with it; with `require_client_certificate`
// (and `ca`, required then) clients must present a certificate `ca` signed.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files, bool require_client_certificate);

// Plaintext when no file is given; otherwise TLS that verifies the server
// against `ca` (the system roots without it) and presents `cert` if given.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const TlsFiles& files);

// The tokens of --api_key_file: one per line, `TOKEN [TENANT]` (a key
// without a tenant is a tenant of its own, UnnamedTenant); blank lines and
// lines starting with '#' are skipped. Requests share prefix-cache blocks
// only within a tenant. The file is read again when its
// modification time changes (checked at most once a second), so keys rotate
// without a restart; a file that becomes unreadable keeps the last keys.
class ApiKeys {
 public:
  static absl::StatusOr<std::unique_ptr<ApiKeys>> FromFile(const std::string& path);

  // The tenant of `token`, or nullopt when it is not a key. Every key is compared in full, in
  // constant time.
  std::optional<std::string> Tenant(absl::string_view token);

  // OK with the caller's tenant, or UNAUTHENTICATED saying what is missing.
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& ctx);
  // The same for the value of an authorization header ("" when there is
  // none): the HTTP API's.
  absl::StatusOr<std::string> Authenticate(absl::string_view authorization);

 private:
  struct Key {
    std::string token;
    std::string tenant;
  };
  explicit ApiKeys(std::string path) : path_(std::move(path)) {}
  absl::Status Load() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  std::vector<Key> keys_ ABSL_GUARDED_BY(mu_);
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// The tenant of a key listed without one: "key-" and the first 8 bytes of
// the key's SHA-256 in hex, so it stays the same whatever lines are added
// around it and names no part of the key.
std::string UnnamedTenant(absl::string_view token);

// Parses an API key file's lines (exposed for tests).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseApiKeys(
    absl::string_view text);

// The first token of a key file, for clients (shiftctl, shift-bench).
absl::StatusOr<std::string> ReadApiKey(const std::string& path);

// Adds `authorization: Bearer token` to a call when `token` is not empty.
void AddApiKey(grpc::ClientContext* ctx, const std::string& token);

// The internal port's token (README "Security"): a secret of the deployment
// that every call on the internal port carries (metadata
// kInternalTokenHeader), so a process that can reach the port but cannot
// read the token file cannot register as a rank or touch the rendezvous
// store. "none" turns it off, which is allowed only with mutual TLS.
inline constexpr char kInternalTokenHeader[] = "x-shift-internal-token";
inline constexpr char kNoInternalToken[] = "none";

// The token file an --internal_token_file value names: "" is
// $HOME/.shift/internal_token (the user's home directory when HOME is not
// set), where the router writes the token and ranks on its machine find it;
// kNoInternalToken gives "" (no token). An error without a home directory.
absl::StatusOr<std::string> InternalTokenPath(const std::string& flag);

// The router's token: `path`'s, or, when the file does not exist, a fresh
// random one (256 bits in hex) written there with mode 0600 (its directory
// created 0700). A file any user may read is refused (its group may: a
// Kubernetes Secret mounted for the pod's fsGroup), and so is a token
// shorter than 16 characters.
absl::StatusOr<std::string> LoadOrCreateInternalToken(const std::string& path);

// `bytes` random bytes (getrandom) in hex: tokens and tickets.
absl::StatusOr<std::string> RandomHex(size_t bytes);

// Equal strings, in time that depends on their lengths only.
bool ConstantTimeEqual(absl::string_view a, absl::string_view b);
// A rank's token: `path`'s, under the same rules; NOT_FOUND while the
// router has not written it yet.
absl::StatusOr<std::string> ReadInternalToken(const std::string& path);

// Whether a call on the internal port carries `token` (compared in constant
// time); true when `token` is empty (no token required).
bool HasInternalToken(const grpc::ServerContextBase& ctx, const std::string& token);
// The status every call without the right token gets, whatever else is
// wrong with it: an outsider learns nothing more.
grpc::Status InternalTokenRefusal();
// A channel to the router's internal port whose every call carries `token`
// (none when empty).
std::shared_ptr<grpc::Channel> InternalChannel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args, const std::string& token);

}  // namespace shift
