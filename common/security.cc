#include "common/security.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/client_interceptor.h"
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

}  // namespace

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

constexpr size_t kMinInternalToken = 16;

// The token of a regular file that not every user may read (the header says more).
absl::StatusOr<std::string> ReadInternalToken(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no internal token file ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("internal token file ", path, " is not a regular file"));
  }
  // Its group may read it (a Kubernetes Secret mounted for the pod's
  // fsGroup); everybody may not.
  if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "internal token file ", path, " may be read by any user (chmod o-rw ", path, ")"));
  }
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const std::string token(absl::StripAsciiWhitespace(text));
  if (token.size() < kMinInternalToken || token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("internal token file ", path,
                                                   " must hold one token of at least ",
                                                   kMinInternalToken, " characters"));
  }
  return token;
}

absl::StatusOr<std::string> InternalTokenPath(const std::string& flag) {
  if (flag == kNoInternalToken) return std::string();
  if (!flag.empty()) return flag;
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    const struct passwd* user = ::getpwuid(::getuid());
    home = user != nullptr ? user->pw_dir : nullptr;
  }
  if (home == nullptr || *home == '\0') {
    return absl::InvalidArgumentError("--internal_token_file is required without a home directory");
  }
  return absl::StrCat(home, "/.shift/internal_token");
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string random(bytes, '\0');
  if (::getrandom(random.data(), bytes, 0) != static_cast<ssize_t>(bytes)) {
    return absl::InternalError("getrandom failed");
  }
  return absl::BytesToHexString(random);
}

absl::StatusOr<std::string> LoadOrCreateInternalToken(const std::string& path) {
  absl::StatusOr<std::string> existing = ReadInternalToken(path);
  if (!absl::IsNotFound(existing.status())) return existing;
  SHIFT_ASSIGN_OR_RETURN(const std::string token, RandomHex(32));
  if (const size_t slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    ::mkdir(path.substr(0, slash).c_str(), 0700);  // may exist: the open says what is wrong
  }
  // Written whole under a temporary name, then linked into place: a router
  // or rank reading meanwhile sees no file or the whole token, and of two
  // routers starting together the first link wins and both use its token.
  const std::string temporary = absl::StrCat(path, ".", ::getpid(), ".tmp");
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot write the internal token to ", path, ": ", std::strerror(errno)));
  }
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  const int linked = written ? ::link(temporary.c_str(), path.c_str()) : -1;
  const int link_error = errno;
  ::unlink(temporary.c_str());
  if (linked != 0) {
    if (written && link_error == EEXIST) return ReadInternalToken(path);
    return absl::UnavailableError(
        absl::StrCat("cannot write the internal token to ", path, ": ", std::strerror(link_error)));
  }
  Log(LogLevel::kInfo, "security", absl::StrCat("wrote a new internal token to ", path),
      {{"event", "internal_token_created"}, {"path", path}});
  return token;
}

bool HasInternalToken(const grpc::ServerContextBase& ctx, const std::string& token) {
  if (token.empty()) return true;
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find(kInternalTokenHeader);
  if (it == metadata.end()) return false;
  return ConstantTimeEqual(absl::string_view(it->second.data(), it->second.size()), token);
}

grpc::Status InternalTokenRefusal() {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "the internal port needs the deployment's internal token "
                      "(--internal_token_file)");
}

namespace {

// Adds the token to every call's initial metadata.
class InternalTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit InternalTokenInterceptor(const std::string* token) : token_(token) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kInternalTokenHeader, *token_);
    }
    methods->Proceed();
  }

 private:
  const std::string* token_;
};

class InternalTokenInterceptors final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit InternalTokenInterceptors(std::string token) : token_(std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new InternalTokenInterceptor(&token_);
  }

 private:
  const std::string token_;
};

}  // namespace

std::shared_ptr<grpc::Channel> InternalChannel(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args, const std::string& token) {
  if (token.empty()) return grpc::CreateCustomChannel(target, creds, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<InternalTokenInterceptors>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, creds, args,
                                                                 std::move(factories));
}

}  // namespace shift
