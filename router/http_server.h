// An HTTP/1.1 server on Boost.Beast and Asio, for the router's
// OpenAI-compatible API (router/openai_service.h). A fixed number of threads
// run every connection's I/O, event-driven, so thousands of long-lived
// streams cost memory, not threads. A request is read whole (its headers,
// then a body bounded per request and, across connections, by a byte
// budget) and handed to the handler, which answers through the request's
// HttpExchange, at once or later and from any thread: one response, or a
// chunked stream (server-sent events) with back-pressure. TLS uses the
// router's certificate files, re-read when they change.
//
// Bounded against hostile clients: connections (more are closed at
// accept), the time a client may take to send a complete request (slow
// headers and idle keep-alive connections are closed), header and body
// sizes, bytes of bodies being read at once, and bytes a stream may hold
// unsent. A client that goes away while its request runs is noticed at once
// (the connection is read while the response is produced) and its
// exchange's close callback runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace shift {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: any
  int threads = 2;
  // PEM files: TLS when set (both), re-read when they change.
  std::string tls_cert;
  std::string tls_key;
  int64_t max_body_bytes = int64_t{4} << 20;
  // Bytes of request bodies being read or handled, all connections
  // together; a body that would pass it gets 503.
  int64_t max_body_memory = int64_t{256} << 20;
  int64_t max_connections = 4096;
  // From a connection's start, or its previous response, to a complete
  // request: slow clients and idle keep-alive connections are closed.
  absl::Duration request_timeout = absl::Seconds(30);
  // One write to the client; a client that reads nothing that long is closed.
  absl::Duration write_timeout = absl::Seconds(60);
  // Unsent bytes of a streamed response before HttpExchange::Write says full.
  int64_t max_stream_bytes = int64_t{256} << 10;
};

struct HttpRequest {
  std::string method;
  std::string target;  // path and query, as sent
  std::string authorization;
  std::string body;
  std::string peer;  // the client's address, without its port
};

// One request's answer. Thread-safe; the handler keeps the shared_ptr as
// long as it answers.
class HttpExchange {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;
  // A whole response; the exchange ends. Ignored after the first answer.
  void Reply(int status, const std::string& content_type, std::string body,
             const Headers& headers = {});
  // Starts a chunked response; Write sends its pieces, End finishes it.
  void StartStream(int status, const std::string& content_type, const Headers& headers = {});
  // Queues a piece of the stream. False when the client holds more than
  // max_stream_bytes unsent: write no more until the drain callback runs.
  bool Write(std::string data);
  void End();
  // `on_close`: the client went away before the exchange ended (or the
  // server stopped); once, on an I/O thread. `on_drain`: a Write that said
  // full has been half sent. Set them before the first Write.
  void SetCallbacks(std::function<void()> on_close, std::function<void()> on_drain);
  bool closed();

  // For the server's connections (http_server.cc).
  struct Outgoing {
    std::string bytes;
    bool ended = false;  // the response is complete after these bytes
  };
  HttpExchange(std::function<void()> notify, int64_t max_stream_bytes, bool keep_alive)
      : notify_(std::move(notify)), max_stream_bytes_(max_stream_bytes), keep_alive_(keep_alive) {}
  Outgoing Take();
  void Sent(int64_t bytes);
  void Close();

 private:
  void Append(std::string bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::function<void()> notify_;  // posts a flush to the connection
  const int64_t max_stream_bytes_;
  absl::Mutex mu_;
  std::string pending_ ABSL_GUARDED_BY(mu_);
  int64_t unsent_ ABSL_GUARDED_BY(mu_) = 0;  // pending plus in flight
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool streaming_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool full_ ABSL_GUARDED_BY(mu_) = false;
  const bool keep_alive_;  // said in the response head
  std::function<void()> on_close_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_drain_ ABSL_GUARDED_BY(mu_);
};

// The status line's reason phrase for `status`.
const char* HttpReason(int status);

class HttpServer {
 public:
  using Handler = std::function<void(HttpRequest, std::shared_ptr<HttpExchange>)>;
  // Listens and starts its threads. `handler` runs on an I/O thread and
  // must not block.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           Handler handler);
  // Stops accepting, closes every connection (their close callbacks run)
  // and joins the threads.
  ~HttpServer();
  int port() const { return port_; }
  int64_t connections() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace shift
