#include "common/peer_socket.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace shift {
namespace {

// An address and port as IPv6 (an IPv4 address as ::ffff:a.b.c.d), so that
// an IPv4 peer of a socket listening on IPv6 compares equal.
struct Endpoint {
  in6_addr address{};
  uint16_t port = 0;
  bool operator==(const Endpoint& other) const {
    return port == other.port && std::memcmp(&address, &other.address, sizeof(address)) == 0;
  }
};

Endpoint FromIpv4(const in_addr& a, uint16_t port) {
  Endpoint e;
  e.address.s6_addr[10] = e.address.s6_addr[11] = 0xff;
  std::memcpy(&e.address.s6_addr[12], &a, 4);
  e.port = port;
  return e;
}

std::optional<Endpoint> ParsePeer(std::string_view name) {
  absl::string_view rest(name.data(), name.size());
  const bool v4 = absl::ConsumePrefix(&rest, "ipv4:");
  if (!v4 && !absl::ConsumePrefix(&rest, "ipv6:")) return std::nullopt;
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) return std::nullopt;
  absl::string_view host = rest.substr(0, colon);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(rest.substr(colon + 1), &port) || port > 65535) return std::nullopt;
  if (v4) {
    in_addr a;
    if (inet_pton(AF_INET, std::string(host).c_str(), &a) != 1) return std::nullopt;
    return FromIpv4(a, port);
  }
  if (!absl::ConsumePrefix(&host, "[") || !absl::ConsumeSuffix(&host, "]")) return std::nullopt;
  host = host.substr(0, host.find('%'));  // a zone ("fe80::1%eth0") is not compared
  Endpoint e;
  if (inet_pton(AF_INET6, std::string(host).c_str(), &e.address) != 1) return std::nullopt;
  e.port = port;
  return e;
}

std::optional<Endpoint> PeerOf(int fd) {
  sockaddr_storage storage{};
  socklen_t size = sizeof(storage);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &size) != 0) return std::nullopt;
  if (storage.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&storage);
    return FromIpv4(a->sin_addr, ntohs(a->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&storage);
    Endpoint e;
    e.address = a->sin6_addr;
    e.port = ntohs(a->sin6_port);
    return e;
  }
  return std::nullopt;
}

std::optional<uint64_t> Received(int fd) {
  tcp_info info{};
  socklen_t size = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) return std::nullopt;
  if (info.tcpi_state != 1 /* TCP_ESTABLISHED */) return std::nullopt;
  if (size < offsetof(tcp_info, tcpi_bytes_received) + sizeof(info.tcpi_bytes_received)) {
    return std::nullopt;  // a kernel before 4.1
  }
  return info.tcpi_bytes_received;
}

}  // namespace

std::optional<uint64_t> ReceivedBytes(std::string_view peer, int* fd_hint) {
  const std::optional<Endpoint> want = ParsePeer(peer);
  if (!want) return std::nullopt;
  if (fd_hint != nullptr && *fd_hint >= 0 && PeerOf(*fd_hint) == want) {
    if (std::optional<uint64_t> received = Received(*fd_hint)) return received;
  }
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return std::nullopt;
  std::optional<uint64_t> received;
  while (dirent* entry = readdir(fds)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(fds)) continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    if (PeerOf(static_cast<int>(fd)) != want) continue;
    received = Received(static_cast<int>(fd));
    if (!received) continue;
    if (fd_hint != nullptr) *fd_hint = static_cast<int>(fd);
    break;
  }
  closedir(fds);
  return received;
}

}  // namespace shift
