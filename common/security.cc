#include "common/security.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_context.h"
#include "openssl/sha.h"

namespace shift {
namespace {

// A PEM file we can read now (the watcher re-reads it later): a missing or
// malformed file is an error at start-up, not a silent handshake failure.
absl::Status CheckPem(const std::string& path, absl::string_view what) {
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  if (!absl::StrContains(text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a PEM file"));
  }
  return absl::OkStatus();
}

absl::Status CheckFiles(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!files.cert.empty()) {
    SHIFT_RETURN_IF_ERROR(CheckPem(files.cert, "--tls_cert"));
    SHIFT_RETURN_IF_ERROR(CheckPem(files.key, "--tls_key"));
  }
  if (!files.ca.empty()) SHIFT_RETURN_IF_ERROR(CheckPem(files.ca, "--tls_ca"));
  return absl::OkStatus();
}

std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> Watcher(const TlsFiles& files) {
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, kTlsReloadSeconds);
}

int64_t ModificationTimeNs(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// Equal strings, in time that depends on their lengths only.
bool ConstantTimeEqual(absl::string_view a, absl::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files, bool require_client_certificate) {
  SHIFT_RETURN_IF_ERROR(CheckFiles(files));
  if (files.cert.empty()) {
    if (require_client_certificate || !files.ca.empty()) {
      return absl::InvalidArgumentError("--tls_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (require_client_certificate && files.ca.empty()) {
    return absl::InvalidArgumentError("client certificates need --tls_ca to verify them");
  }
  grpc::experimental::TlsServerCredentialsOptions options(Watcher(files));
  options.watch_identity_key_cert_pairs();
  if (!files.ca.empty()) options.watch_root_certs();
  options.set_cert_request_type(require_client_certificate
                                    ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsFiles& files) {
  SHIFT_RETURN_IF_ERROR(CheckFiles(files));
  if (files.cert.empty() && files.ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Watcher(files));
  if (!files.ca.empty()) options.watch_root_certs();
  if (!files.cert.empty()) options.watch_identity_key_cert_pairs();
  return grpc::experimental::TlsCredentials(options);
}

std::string UnnamedTenant(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  std::string hex = "key-";
  for (int i = 0; i < 8; ++i) absl::StrAppend(&hex, absl::Hex(digest[i], absl::kZeroPad2));
  return hex;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseApiKeys(
    absl::string_view text) {
  std::vector<std::pair<std::string, std::string>> keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": expected TOKEN [TENANT]"));
    }
    if (fields[0].size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": a token has at least 16 characters"));
    }
    // A key without a tenant name is a tenant of its own, named by a digest
    // of the key (not by its line, which another key's line would move).
    keys.emplace_back(std::string(fields[0]),
                      fields.size() > 1 ? std::string(fields[1]) : UnnamedTenant(fields[0]));
  }
  return keys;
}

absl::StatusOr<std::unique_ptr<ApiKeys>> ApiKeys::FromFile(const std::string& path) {
  std::unique_ptr<ApiKeys> keys(new ApiKeys(path));
  absl::MutexLock lock(&keys->mu_);
  SHIFT_RETURN_IF_ERROR(keys->Load());
  if (keys->keys_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--api_key_file ", path, " has no key"));
  }
  return keys;
}

absl::Status ApiKeys::Load() {
  const int64_t mtime = ModificationTimeNs(path_);
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path_));
  auto parsed = ParseApiKeys(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api_key_file ", path_, ": ", parsed.status().message()));
  }
  keys_.clear();
  for (auto& [token, tenant] : *parsed) keys_.push_back({std::move(token), std::move(tenant)});
  mtime_ns_ = mtime;
  return absl::OkStatus();
}

void ApiKeys::MaybeReload() {
  const absl::Time now = absl::Now();
  if (now - checked_ < absl::Seconds(1)) return;
  checked_ = now;
  const int64_t mtime = ModificationTimeNs(path_);
  if (mtime < 0 || mtime == mtime_ns_) return;
  std::vector<Key> before = keys_;
  const absl::Status status = Load();
  if (!status.ok() || keys_.empty()) {
    // A half-written or broken file keeps the last good keys.
    keys_ = std::move(before);
    Log(LogLevel::kWarning, "security", "keeping the previous API keys",
        {{"reason",
          status.ok() ? std::string("the new file has no key") : std::string(status.message())}});
    return;
  }
  Log(LogLevel::kInfo, "security", "API key file reloaded",
      {{"event", "keys_reloaded"}, {"keys", keys_.size()}});
}

std::optional<std::string> ApiKeys::Tenant(absl::string_view token) {
  absl::MutexLock lock(&mu_);
  MaybeReload();
  std::optional<std::string> tenant;
  for (const Key& key : keys_) {
    if (ConstantTimeEqual(key.token, token) && !tenant) tenant = key.tenant;
  }
  return tenant;
}

absl::StatusOr<std::string> ApiKeys::Authenticate(const grpc::ServerContextBase& ctx) {
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return Authenticate(absl::string_view());
  return Authenticate(absl::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<std::string> ApiKeys::Authenticate(absl::string_view authorization) {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "this server needs an API key: send \"authorization: Bearer <key>\"");
  }
  absl::string_view value = authorization;
  if (!absl::ConsumePrefix(&value, "Bearer ") && !absl::ConsumePrefix(&value, "bearer ")) {
    return absl::UnauthenticatedError("the authorization header is not \"Bearer <key>\"");
  }
  std::optional<std::string> tenant = Tenant(absl::StripAsciiWhitespace(value));
  if (!tenant) return absl::UnauthenticatedError("the API key is not valid");
  return *std::move(tenant);
}

absl::StatusOr<std::string> ReadApiKey(const std::string& path) {
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto parsed = ParseApiKeys(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
  }
  if (parsed->empty()) return absl::InvalidArgumentError(absl::StrCat(path, " has no key"));
  return parsed->front().first;
}

void AddApiKey(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

}  // namespace shift
