// The HTTP server against raw sockets on 127.0.0.1: whole and streamed
// responses, keep-alive, a client that goes away, back-pressure, and the
// bounds that keep hostile clients out (slow senders, oversized bodies,
// malformed requests, too many connections).
#include "router/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

void Send(int fd, const std::string& data) {
  ASSERT_EQ(send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// Reads until `until` appears in what was read, the peer closes, or
// `timeout` passes.
std::string ReadUntil(int fd, const std::string& until, absl::Duration timeout = absl::Seconds(5),
                      bool* closed = nullptr) {
  std::string got;
  const absl::Time deadline = absl::Now() + timeout;
  if (closed) *closed = false;
  while (got.find(until) == std::string::npos && absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    char buffer[4096];
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    got.append(buffer, static_cast<size_t>(n));
  }
  return got;
}

std::unique_ptr<HttpServer> Serve(HttpServer::Handler handler, HttpServerOptions options = {}) {
  options.host = "127.0.0.1";
  options.port = 0;
  auto server = HttpServer::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return *std::move(server);
}

HttpServer::Handler Echo() {
  return [](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
    exchange->Reply(200, "text/plain",
                    absl::StrCat(request.method, " ", request.target, " [", request.body, "] ",
                                 request.authorization));
  };
}

// The handler's exchange, handed to the test's thread.
struct Handed {
  absl::Notification arrived;
  std::shared_ptr<HttpExchange> exchange;
  HttpServer::Handler Handler(std::function<void()> on_drain = nullptr) {
    return [this, on_drain](HttpRequest, std::shared_ptr<HttpExchange> e) {
      e->SetCallbacks(nullptr, on_drain);
      exchange = std::move(e);
      arrived.Notify();
    };
  }
};

TEST(HttpServerTest, AnswersRequestsOnAKeptAliveConnection) {
  auto server = Serve(Echo());
  const int fd = Connect(server->port());
  Send(fd,
       "POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\nContent-Length: 3\r\n"
       "\r\nabc");
  std::string got = ReadUntil(fd, "Bearer k");
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(got, HasSubstr("Content-Length: 29\r\n"));
  EXPECT_THAT(got, HasSubstr("Connection: keep-alive"));
  EXPECT_THAT(got, HasSubstr("POST /v1/x?y=1 [abc] Bearer k"));
  // The same connection, twice more, the second pipelined behind the first.
  Send(fd, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
  got = ReadUntil(fd, "GET /b");
  EXPECT_THAT(got, HasSubstr("GET /a []"));
  EXPECT_THAT(got, HasSubstr("GET /b []"));
  close(fd);
}

TEST(HttpServerTest, StreamsChunksWrittenFromAnotherThread) {
  Handed handed;
  auto server = Serve(handed.Handler());
  const int fd = Connect(server->port());
  Send(fd, "GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(handed.arrived.WaitForNotificationWithTimeout(absl::Seconds(5)));
  handed.exchange->StartStream(200, "text/event-stream");
  for (int i = 0; i < 3; ++i) handed.exchange->Write(absl::StrCat("data: ", i, "\n\n"));
  handed.exchange->End();
  const std::string got = ReadUntil(fd, "0\r\n\r\n");
  EXPECT_THAT(got, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(got,
              HasSubstr("9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"));
  close(fd);
}

TEST(HttpServerTest, TellsTheHandlerWhenTheClientGoesAway) {
  absl::Notification gone;
  std::shared_ptr<HttpExchange> held;
  absl::Mutex mu;
  auto server = Serve([&](HttpRequest, std::shared_ptr<HttpExchange> exchange) {
    exchange->SetCallbacks([&] { gone.Notify(); }, nullptr);
    absl::MutexLock lock(&mu);
    held = exchange;  // answered later, never
  });
  const int fd = Connect(server->port());
  Send(fd, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n");
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(gone.HasBeenNotified());
  close(fd);
  EXPECT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(5)));
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(held->closed());
}

TEST(HttpServerTest, SaysFullWhenTheClientDoesNotReadAndDrainsWhenItDoes) {
  HttpServerOptions options;
  options.max_stream_bytes = 64 << 10;
  std::atomic<int> drained{0};
  Handed handed;
  auto server = Serve(handed.Handler([&] { ++drained; }), options);
  const int fd = Connect(server->port());
  Send(fd, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_TRUE(handed.arrived.WaitForNotificationWithTimeout(absl::Seconds(5)));
  HttpExchange& exchange = *handed.exchange;
  exchange.StartStream(200, "text/plain");
  // The sockets' buffers take some; then the exchange holds the rest.
  bool full = false;
  for (int i = 0; i < 4096 && !full; ++i) full = !exchange.Write(std::string(16 << 10, 'x'));
  ASSERT_TRUE(full);
  ReadUntil(fd, "never", absl::Seconds(1));  // reads what is there
  EXPECT_GE(drained.load(), 1);
  close(fd);
}

TEST(HttpServerTest, ClosesSlowAndIdleClients) {
  HttpServerOptions options;
  options.request_timeout = absl::Milliseconds(300);
  auto server = Serve(Echo(), options);
  // Headers trickled slower than the timeout allows.
  const int slow = Connect(server->port());
  Send(slow, "GET / HTTP/1.1\r\n");
  const absl::Time start = absl::Now();
  bool closed = false;
  ReadUntil(slow, "never", absl::Seconds(5), &closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  close(slow);
  // A kept-alive connection that sends nothing more.
  const int idle = Connect(server->port());
  Send(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  const std::string got = ReadUntil(idle, "never", absl::Seconds(5), &closed);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200"));
  EXPECT_TRUE(closed);
  close(idle);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (server->connections() > 0 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(server->connections(), 0);
}

TEST(HttpServerTest, RefusesOversizedAndMalformedRequests) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  auto server = Serve(Echo(), options);
  int fd = Connect(server->port());
  Send(fd, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n");
  std::string got = ReadUntil(fd, "}}");
  EXPECT_THAT(got, StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(got, HasSubstr("Connection: close"));
  EXPECT_THAT(got, HasSubstr("\"code\":413"));
  close(fd);
  // A chunked body that grows past the limit.
  fd = Connect(server->port());
  Send(fd, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
               std::string(0x800, 'a') + "\r\n");
  EXPECT_THAT(ReadUntil(fd, "}}"), StartsWith("HTTP/1.1 413 "));
  close(fd);
  fd = Connect(server->port());
  Send(fd, "NOT HTTP AT ALL\r\n\r\n");
  EXPECT_THAT(ReadUntil(fd, "}}"), StartsWith("HTTP/1.1 400 "));
  close(fd);
  fd = Connect(server->port());
  Send(fd, "GET / HTTP/1.1\r\nX: " + std::string(20000, 'h') + "\r\n\r\n");
  EXPECT_THAT(ReadUntil(fd, "}}"), StartsWith("HTTP/1.1 431 "));
  close(fd);
}

TEST(HttpServerTest, BoundsBodiesBeingReadAcrossConnections) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  options.max_body_memory = 1500;
  auto server = Serve(Echo(), options);
  // The first holds 1000 bytes of budget while its body trickles in.
  const int first = Connect(server->port());
  Send(first, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc");
  absl::SleepFor(absl::Milliseconds(100));
  const int second = Connect(server->port());
  Send(second, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
  EXPECT_THAT(ReadUntil(second, "}}"), StartsWith("HTTP/1.1 503 "));
  close(second);
  Send(first, std::string(997, 'x'));
  EXPECT_THAT(ReadUntil(first, "]"), StartsWith("HTTP/1.1 200 "));
  close(first);
}

TEST(HttpServerTest, ClosesConnectionsBeyondTheLimitAndKeepsAccepting) {
  HttpServerOptions options;
  options.max_connections = 2;
  auto server = Serve(Echo(), options);
  const int a = Connect(server->port()), b = Connect(server->port());
  absl::SleepFor(absl::Milliseconds(100));
  const int c = Connect(server->port());
  bool closed = false;
  ReadUntil(c, "never", absl::Seconds(2), &closed);
  EXPECT_TRUE(closed);
  close(c);
  close(a);
  absl::SleepFor(absl::Milliseconds(100));
  const int d = Connect(server->port());
  Send(d, "GET /d HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_THAT(ReadUntil(d, "GET /d"), StartsWith("HTTP/1.1 200 "));
  close(d);
  close(b);
}

}  // namespace
}  // namespace shift
