#include "common/peer_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

int Port(int fd, bool peer) {
  sockaddr_in address{};
  socklen_t size = sizeof(address);
  if (peer) {
    getpeername(fd, reinterpret_cast<sockaddr*>(&address), &size);
  } else {
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  }
  return ntohs(address.sin_port);
}

// Waits for the kernel to count `want` bytes received (loopback delivers
// at once, but not necessarily before write returns).
std::optional<uint64_t> AwaitReceived(const std::string& peer, uint64_t want, int* hint) {
  std::optional<uint64_t> received;
  for (int i = 0; i < 200; ++i) {
    received = ReceivedBytes(peer, hint);
    if (received == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return received;
}

TEST(PeerSocketTest, CountsBytesTheKernelReceivedReadOrNot) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  address.sin_port = htons(Port(listener, false));
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  // The server side's connection, named by its peer as gRPC names it.
  const std::string peer = absl::StrCat("ipv4:127.0.0.1:", Port(server, true));
  const std::string mapped = absl::StrCat("ipv6:[::ffff:127.0.0.1]:", Port(server, true));

  int hint = -1;
  EXPECT_EQ(AwaitReceived(peer, 0, &hint), 0u);
  EXPECT_EQ(hint, server);
  const std::string message(100, 'x');
  ASSERT_EQ(write(client, message.data(), message.size()), 100);
  EXPECT_EQ(AwaitReceived(peer, 100, &hint), 100u);  // unread
  char buffer[100];
  ASSERT_EQ(read(server, buffer, sizeof(buffer)), 100);
  EXPECT_EQ(ReceivedBytes(peer, &hint), 100u);  // read: still counted
  EXPECT_EQ(ReceivedBytes(mapped), 100u);       // no hint: found by looking
  // The client's own socket is the connection to the listener, not to `peer`.
  EXPECT_EQ(ReceivedBytes(absl::StrCat("ipv4:127.0.0.1:", Port(listener, false))), 0u);

  close(client);
  close(server);
  close(listener);
  int stale = server;  // closed: the hint is no longer that connection
  EXPECT_EQ(ReceivedBytes(peer, &stale), std::nullopt);
}

TEST(PeerSocketTest, OnlyTcpPeersAsGrpcNamesThem) {
  EXPECT_EQ(ReceivedBytes("unix:/tmp/socket"), std::nullopt);
  EXPECT_EQ(ReceivedBytes("ipv4:not-an-address:1"), std::nullopt);
  EXPECT_EQ(ReceivedBytes("ipv4:127.0.0.1:99999"), std::nullopt);
  EXPECT_EQ(ReceivedBytes("ipv6:::1:41202"), std::nullopt);   // no brackets
  EXPECT_EQ(ReceivedBytes("ipv6:[::1%lo]:1"), std::nullopt);  // parsed; no such connection
  EXPECT_EQ(ReceivedBytes(""), std::nullopt);
}

}  // namespace
}  // namespace shift
