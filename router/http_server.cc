#include "router/http_server.h"

#include <sys/stat.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <optional>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "nlohmann/json.hpp"

namespace shift {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kHeaderLimit = 16 << 10;
// Bytes read ahead of a running exchange (a pipelined request) before the
// connection stops reading until the exchange ends.
constexpr size_t kReadAhead = 64 << 10;

std::string ResponseHead(int status, const std::string& content_type,
                         const HttpExchange::Headers& headers, bool keep_alive,
                         std::optional<size_t> content_length) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", HttpReason(status), "\r\n");
  if (!content_type.empty()) absl::StrAppend(&head, "Content-Type: ", content_type, "\r\n");
  for (const auto& [name, value] : headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
  if (content_length) {
    absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
  } else {
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
  }
  absl::StrAppend(&head, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n",
                  "\r\n");
  return head;
}

// An error answered by the server itself (before any handler), in the
// OpenAI API's error shape.
std::string ErrorBody(int status, const std::string& message) {
  nlohmann::ordered_json error;
  error["error"]["message"] = message;
  error["error"]["type"] = status == 413 ? "request_too_large" : "invalid_request_error";
  error["error"]["param"] = nullptr;
  error["error"]["code"] = status;
  return error.dump();
}

// A request Beast could not parse (not a connection that ended early).
bool IsMalformed(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

int64_t ModificationTimeNs(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return -1;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

// The TLS context of new connections, made again when the certificate or
// key file changes (checked at most every two seconds); a file that cannot
// be loaded keeps the previous context.
class TlsContexts {
 public:
  TlsContexts(std::string cert, std::string key) : cert_(std::move(cert)), key_(std::move(key)) {}
  absl::Status Load() {
    absl::MutexLock lock(&mu_);
    return Reload();
  }
  std::shared_ptr<asio::ssl::context> Get() {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - checked_ >= absl::Seconds(2)) {
      checked_ = now;
      if (ModificationTimeNs(cert_) != cert_mtime_ || ModificationTimeNs(key_) != key_mtime_) {
        if (const absl::Status status = Reload(); !status.ok()) {
          Log(LogLevel::kWarning, "http", "keeping the previous TLS certificate",
              {{"reason", std::string(status.message())}});
        } else {
          Log(LogLevel::kInfo, "http", "TLS certificate rotated",
              {{"event", "certificate_rotated"}, {"cert", cert_}});
        }
      }
    }
    return context_;
  }

 private:
  absl::Status Reload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t cert_mtime = ModificationTimeNs(cert_), key_mtime = ModificationTimeNs(key_);
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    boost::system::error_code ec;
    context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                             asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                             asio::ssl::context::no_tlsv1_1,
                         ec);
    if (!ec) context->use_certificate_chain_file(cert_, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat(cert_, ": ", ec.message()));
    context->use_private_key_file(key_, asio::ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat(key_, ": ", ec.message()));
    context_ = std::move(context);
    cert_mtime_ = cert_mtime;
    key_mtime_ = key_mtime;
    return absl::OkStatus();
  }

  const std::string cert_, key_;
  absl::Mutex mu_;
  std::shared_ptr<asio::ssl::context> context_ ABSL_GUARDED_BY(mu_);
  int64_t cert_mtime_ ABSL_GUARDED_BY(mu_) = -1, key_mtime_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::Now();
};

class Connection;

// Whether the server's io_context still runs. An exchange, which a handler
// may keep past the server's end, reaches its connection only through the
// gate, so once the server is going nothing posts to a connection or holds
// one (whose strand and socket belong to the io_context) from outside.
struct Gate {
  absl::Mutex mu;
  bool open ABSL_GUARDED_BY(mu) = true;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  Handler handler;
  asio::io_context io{options.threads};
  tcp::acceptor acceptor{asio::make_strand(io)};
  asio::steady_timer accept_retry{acceptor.get_executor()};
  std::unique_ptr<TlsContexts> tls;
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> body_bytes{0};
  absl::Time accept_error_logged = absl::InfinitePast();
  absl::Mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> live ABSL_GUARDED_BY(mu);
  const std::shared_ptr<Gate> gate = std::make_shared<Gate>();
  std::vector<std::thread> threads;

  void Accept();
};

namespace {

// One client connection: reads requests one at a time, hands each to the
// handler, writes what its exchange queues. Every step runs on the
// connection's strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpServer::Impl* server, tcp::socket socket, std::shared_ptr<asio::ssl::context> tls)
      : server_(server),
        executor_(socket.get_executor()),
        tls_context_(std::move(tls)),
        request_timer_(executor_),
        write_timer_(executor_) {
    boost::system::error_code ec;
    const tcp::endpoint peer = socket.remote_endpoint(ec);
    if (!ec) peer_ = peer.address().to_string();
    // A streamed token is a small write that must leave at once, not wait
    // (Nagle) for the client's delayed acknowledgement of the last one.
    socket.set_option(tcp::no_delay(true), ec);
    if (tls_context_) {
      tls_stream_.emplace(std::move(socket), *tls_context_);
    } else {
      plain_.emplace(std::move(socket));
    }
  }
  ~Connection() { server_->connections.fetch_sub(1); }

  void Start() {
    {
      absl::MutexLock lock(&server_->mu);
      server_->live.emplace(this, weak_from_this());
    }
    ArmRequestTimer();
    if (tls_stream_) {
      tls_stream_->async_handshake(asio::ssl::stream_base::server,
                                   [self = shared_from_this()](boost::system::error_code ec) {
                                     if (ec) return self->Close();
                                     self->ReadRequest();
                                   });
    } else {
      ReadRequest();
    }
  }

  // From any thread.
  void PostClose() {
    asio::post(executor_, [self = shared_from_this()] { self->Close(); });
  }

 private:
  tcp::socket& socket() { return tls_stream_ ? tls_stream_->next_layer() : *plain_; }

  // Runs `op(stream)` on whichever stream this connection has.
  template <typename Op>
  void WithStream(Op&& op) {
    if (tls_stream_) {
      op(*tls_stream_);
    } else {
      op(*plain_);
    }
  }

  void ArmRequestTimer() {
    request_timer_.expires_after(
        std::chrono::microseconds(absl::ToInt64Microseconds(server_->options.request_timeout)));
    request_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Close();
    });
  }

  void ReadRequest() {
    if (closed_) return;
    if (reading_) {
      // The read that watched the last exchange's connection is pending;
      // it goes on to this request when it completes, at once when a
      // pipelined request is already here.
      waiting_request_ = true;
      if (buffer_.size() > 0) {
        boost::system::error_code ignored;
        socket().cancel(ignored);
      }
      return;
    }
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<uint64_t>(server_->options.max_body_bytes));
    reading_ = true;
    WithStream([this](auto& stream) {
      http::async_read_header(stream, buffer_, *parser_,
                              [self = shared_from_this()](boost::system::error_code ec, size_t) {
                                self->OnHeader(ec);
                              });
    });
  }

  void OnHeader(boost::system::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      if (ec == http::error::header_limit) {
        return Refuse(431, absl::StrCat("the request's headers pass ", kHeaderLimit, " bytes"));
      }
      if (ec == http::error::body_limit) {  // its Content-Length says so
        return Refuse(413, absl::StrCat("the request body passes the ",
                                        server_->options.max_body_bytes, " bytes allowed"));
      }
      if (IsMalformed(ec)) {
        return Refuse(400, absl::StrCat("malformed HTTP request: ", ec.message()));
      }
      return Close();
    }
    const auto& header = parser_->get();
    const int64_t max_body = server_->options.max_body_bytes;
    int64_t size = 0;
    if (const auto length = parser_->content_length()) {
      if (*length > static_cast<uint64_t>(max_body)) {
        return Refuse(413, absl::StrCat("the request body has ", *length, " bytes, more than the ",
                                        max_body, " allowed"));
      }
      size = static_cast<int64_t>(*length);
    } else if (parser_->chunked()) {
      size = max_body;
    }
    if (server_->body_bytes.fetch_add(size) + size > server_->options.max_body_memory) {
      server_->body_bytes.fetch_sub(size);
      return Refuse(503, "the server is reading too many request bodies; retry later");
    }
    reserved_ = size;
    auto read_body = [this] {
      reading_ = true;
      WithStream([this](auto& stream) {
        http::async_read(stream, buffer_, *parser_,
                         [self = shared_from_this()](boost::system::error_code ec, size_t) {
                           self->OnBody(ec);
                         });
      });
    };
    if (absl::EqualsIgnoreCase(std::string(header[http::field::expect]), "100-continue") &&
        size > 0) {
      continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
      WithStream([this, read_body](auto& stream) {
        asio::async_write(
            stream, asio::buffer(continue_),
            [self = shared_from_this(), read_body](boost::system::error_code ec, size_t) {
              if (ec) return self->Close();
              read_body();
            });
      });
      return;
    }
    read_body();
  }

  void OnBody(boost::system::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      if (ec == http::error::body_limit) {
        return Refuse(413, absl::StrCat("the request body passes the ",
                                        server_->options.max_body_bytes, " bytes allowed"));
      }
      if (IsMalformed(ec)) {
        return Refuse(400, absl::StrCat("malformed HTTP request: ", ec.message()));
      }
      return Close();
    }
    request_timer_.cancel();
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.authorization = std::string(message[http::field::authorization]);
    request.body = std::move(message.body());
    request.peer = peer_;
    exchange_ = NewExchange(message.keep_alive());
    WatchConnection();
    server_->handler(std::move(request), exchange_);
    Flush();
  }

  // The exchange of the request just read; the connection closes after it
  // unless the client keeps it alive.
  std::shared_ptr<HttpExchange> NewExchange(bool keep_alive) {
    if (!keep_alive) close_after_ = true;
    std::weak_ptr<Connection> weak = weak_from_this();
    return std::make_shared<HttpExchange>(
        [weak, gate = server_->gate] {
          absl::MutexLock lock(&gate->mu);
          if (!gate->open) return;
          if (std::shared_ptr<Connection> self = weak.lock()) {
            asio::post(self->executor_, [self] { self->Flush(); });
          }
        },
        server_->options.max_stream_bytes, !close_after_);
  }

  // An error the server answers itself; the connection closes after it
  // (what remains of the request is not read).
  void Refuse(int status, const std::string& message) {
    request_timer_.cancel();
    exchange_ = NewExchange(false);
    exchange_->Reply(status, "application/json", ErrorBody(status, message));
    Flush();
  }

  // Reads while an exchange runs, so a client that goes away is noticed at
  // once; what it reads (a pipelined request) stays in the buffer.
  void WatchConnection() {
    if (reading_ || closed_ || buffer_.size() >= kReadAhead) return;
    reading_ = true;
    WithStream([this](auto& stream) {
      stream.async_read_some(
          buffer_.prepare(4096),
          [self = shared_from_this()](boost::system::error_code ec, size_t bytes) {
            self->reading_ = false;
            if (ec == asio::error::operation_aborted && self->waiting_request_ && !self->closed_) {
              self->waiting_request_ = false;
              return self->ReadRequest();
            }
            if (ec) return self->Close();
            self->buffer_.commit(bytes);
            if (self->waiting_request_) {
              self->waiting_request_ = false;
              self->ReadRequest();
            } else if (self->exchange_) {
              self->WatchConnection();
            }
          });
    });
  }

  void Flush() {
    if (writing_ || closed_ || !exchange_) return;
    HttpExchange::Outgoing out = exchange_->Take();
    if (out.bytes.empty()) {
      if (out.ended) FinishExchange();
      return;
    }
    out_ = std::move(out.bytes);
    writing_ = true;
    write_timer_.expires_after(
        std::chrono::microseconds(absl::ToInt64Microseconds(server_->options.write_timeout)));
    write_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->Close();
    });
    WithStream([this](auto& stream) {
      asio::async_write(stream, asio::buffer(out_),
                        [self = shared_from_this()](boost::system::error_code ec, size_t bytes) {
                          self->OnWrite(ec, bytes);
                        });
    });
  }

  void OnWrite(boost::system::error_code ec, size_t bytes) {
    writing_ = false;
    write_timer_.cancel();
    if (ec) return Close();
    std::shared_ptr<HttpExchange> exchange = exchange_;
    if (exchange) exchange->Sent(static_cast<int64_t>(bytes));
    Flush();
  }

  void FinishExchange() {
    ReleaseBody();
    exchange_.reset();
    if (close_after_) {
      boost::system::error_code ignored;
      socket().shutdown(tcp::socket::shutdown_send, ignored);
      return Close();
    }
    ArmRequestTimer();
    ReadRequest();
  }

  void ReleaseBody() {
    server_->body_bytes.fetch_sub(reserved_);
    reserved_ = 0;
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    request_timer_.cancel();
    write_timer_.cancel();
    boost::system::error_code ignored;
    socket().close(ignored);
    ReleaseBody();
    if (std::shared_ptr<HttpExchange> exchange = std::move(exchange_)) exchange->Close();
    absl::MutexLock lock(&server_->mu);
    server_->live.erase(this);
  }

  HttpServer::Impl* server_;
  asio::any_io_executor executor_;
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::optional<tcp::socket> plain_;
  std::optional<asio::ssl::stream<tcp::socket>> tls_stream_;
  asio::steady_timer request_timer_, write_timer_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<HttpExchange> exchange_;
  std::string out_, continue_;
  int64_t reserved_ = 0;
  bool reading_ = false, writing_ = false, closed_ = false, waiting_request_ = false;
  bool close_after_ = false;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](boost::system::error_code ec,
                                                      tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors (or another passing error): the port keeps
      // listening, and accepting resumes once some connection closes.
      const absl::Time now = absl::Now();
      if (now - accept_error_logged > absl::Seconds(10)) {
        accept_error_logged = now;
        Log(LogLevel::kWarning, "http", "accept failed; retrying", {{"reason", ec.message()}});
      }
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](boost::system::error_code wait) {
        if (!wait) Accept();
      });
      return;
    }
    if (connections.load() >= options.max_connections) {
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      connections.fetch_add(1);
      std::make_shared<Connection>(this, std::move(socket), tls ? tls->Get() : nullptr)->Start();
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              Handler handler) {
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError("the HTTP server needs 1 to 64 threads");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("HTTP TLS needs both a certificate and a key");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  const HttpServerOptions& o = impl->options;
  if (!o.tls_cert.empty()) {
    impl->tls = std::make_unique<TlsContexts>(o.tls_cert, o.tls_key);
    if (absl::Status status = impl->tls->Load(); !status.ok()) return status;
  }
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(o.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("HTTP host ", o.host, ": ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(o.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", o.host, ":", o.port, ": ", ec.message()));
  }
  const int port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  for (int i = 0; i < o.threads; ++i) {
    impl->threads.emplace_back([io = &impl->io] { io->run(); });
  }
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(impl)));
  server->port_ = port;
  return server;
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  {
    absl::MutexLock lock(&impl_->gate->mu);
    impl_->gate->open = false;
  }
  asio::post(impl_->acceptor.get_executor(), [impl = impl_.get()] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_retry.cancel();
  });
  std::vector<std::shared_ptr<Connection>> live;
  {
    absl::MutexLock lock(&impl_->mu);
    for (auto& [raw, weak] : impl_->live) {
      if (auto connection = weak.lock()) live.push_back(std::move(connection));
    }
  }
  for (const auto& connection : live) connection->PostClose();
  live.clear();
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (impl_->connections.load() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  impl_->io.stop();
  for (std::thread& thread : impl_->threads) thread.join();
}

int64_t HttpServer::connections() const { return impl_->connections.load(); }

// HttpExchange

void HttpExchange::Append(std::string bytes) {
  unsent_ += static_cast<int64_t>(bytes.size());
  pending_ += bytes;
}

void HttpExchange::Reply(int status, const std::string& content_type, std::string body,
                         const Headers& headers) {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || closed_) return;
    started_ = ended_ = true;
    Append(ResponseHead(status, content_type, headers, keep_alive_, body.size()));
    Append(std::move(body));
  }
  notify_();
}

void HttpExchange::StartStream(int status, const std::string& content_type,
                               const Headers& headers) {
  {
    absl::MutexLock lock(&mu_);
    if (started_ || closed_) return;
    started_ = streaming_ = true;
    Append(ResponseHead(status, content_type, headers, keep_alive_, std::nullopt));
  }
  notify_();
}

bool HttpExchange::Write(std::string data) {
  {
    absl::MutexLock lock(&mu_);
    if (!streaming_ || ended_ || closed_) return true;
    if (data.empty()) return !full_;
    Append(absl::StrFormat("%x\r\n", data.size()));
    Append(std::move(data));
    Append("\r\n");
    if (unsent_ > max_stream_bytes_) full_ = true;
  }
  notify_();
  absl::MutexLock lock(&mu_);
  return !full_;
}

void HttpExchange::End() {
  {
    absl::MutexLock lock(&mu_);
    if (!streaming_ || ended_ || closed_) return;
    ended_ = true;
    Append("0\r\n\r\n");
  }
  notify_();
}

void HttpExchange::SetCallbacks(std::function<void()> on_close, std::function<void()> on_drain) {
  {
    absl::MutexLock lock(&mu_);
    if (!closed_) {
      on_close_ = std::move(on_close);
      on_drain_ = std::move(on_drain);
      return;
    }
  }
  if (on_close) on_close();  // gone already
}

bool HttpExchange::closed() {
  absl::MutexLock lock(&mu_);
  return closed_;
}

HttpExchange::Outgoing HttpExchange::Take() {
  absl::MutexLock lock(&mu_);
  Outgoing out;
  out.bytes.swap(pending_);
  out.ended = ended_;
  return out;
}

void HttpExchange::Sent(int64_t bytes) {
  std::function<void()> drain;
  {
    absl::MutexLock lock(&mu_);
    unsent_ -= bytes;
    if (full_ && unsent_ <= max_stream_bytes_ / 2) {
      full_ = false;
      drain = on_drain_;
    }
  }
  if (drain) drain();
}

void HttpExchange::Close() {
  std::function<void()> on_close;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    if (!ended_) on_close = std::move(on_close_);
    on_close_ = nullptr;
    on_drain_ = nullptr;
  }
  if (on_close) on_close();
}

const char* HttpReason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

}  // namespace shift
