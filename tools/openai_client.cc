#include "tools/openai_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace shift::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;

// Frequent English words, each one token after a space in GPT-2's,
// Llama 3's and Qwen's vocabularies.
constexpr const char* kWords[] = {
    "the",     "of",     "and",  "to",     "in",     "is",      "that",    "for",   "it",
    "as",      "was",    "with", "be",     "by",     "on",      "not",     "he",    "this",
    "are",     "or",     "his",  "from",   "at",     "which",   "but",     "have",  "an",
    "they",    "you",    "were", "her",    "she",    "there",   "one",     "all",   "we",
    "their",   "been",   "has",  "who",    "will",   "more",    "if",      "no",    "when",
    "so",      "out",    "up",   "into",   "said",   "what",    "its",     "about", "than",
    "them",    "can",    "only", "other",  "new",    "some",    "could",   "time",  "these",
    "two",     "may",    "then", "do",     "first",  "any",     "my",      "now",   "such",
    "like",    "our",    "over", "man",    "me",     "even",    "most",    "made",  "after",
    "also",    "did",    "many", "before", "must",   "through", "back",    "years", "where",
    "much",    "your",   "way",  "well",   "down",   "should",  "because", "each",  "just",
    "those",   "people", "how",  "too",    "little", "state",   "good",    "very",  "make",
    "world",   "still",  "own",  "see",    "men",    "work",    "long",    "get",   "here",
    "between", "both",   "life", "being",  "under",  "never",   "day",     "same",  "another",
    "know",    "while"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

// Splits "host:port" (an http:// prefix and a trailing slash allowed;
// IPv6 hosts in brackets).
absl::StatusOr<std::pair<std::string, std::string>> SplitAddress(absl::string_view address) {
  if (absl::StartsWith(address, "https://")) {
    return absl::InvalidArgumentError(
        "--api=openai speaks plain HTTP: https:// addresses are not supported");
  }
  absl::ConsumePrefix(&address, "http://");
  absl::ConsumeSuffix(&address, "/");
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--address must be HOST:PORT, got \"", address, "\""));
  }
  absl::string_view host = address.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  return std::make_pair(std::string(host), std::string(address.substr(colon + 1)));
}

// The error message of an OpenAI error body, else the body itself (cut).
std::string ErrorMessage(const std::string& body) {
  const Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object() &&
      parsed["error"].contains("message") && parsed["error"]["message"].is_string()) {
    return parsed["error"]["message"].get<std::string>();
  }
  return body.substr(0, 200);
}

}  // namespace

std::string SyntheticText(const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) text += ' ';
    text += kWords[static_cast<uint32_t>(ids[i]) % kNumWords];
  }
  return text;
}

std::string OpenAiRequestBody(Endpoint endpoint, const std::string& model,
                              const workload::Request& request) {
  Json body{{"model", model},     {"max_tokens", request.max_tokens},
            {"ignore_eos", true}, {"temperature", 0},
            {"stream", true},     {"stream_options", {{"include_usage", true}}}};
  if (endpoint == Endpoint::kChat) {
    const Json message{{"role", "user"}, {"content", SyntheticText(request.prompt)}};
    body["messages"] = Json::array({message});
  } else {
    body["prompt"] = request.prompt;
  }
  return body.dump();
}

// The I/O thread, the server's resolved addresses, and the idle keep-alive
// connections (touched only on the I/O thread).
struct OpenAiClient::Io {
  asio::io_context context;
  asio::executor_work_guard<asio::io_context::executor_type> work{context.get_executor()};
  tcp::resolver::results_type endpoints;
  std::vector<std::unique_ptr<beast::tcp_stream>> idle;
  std::thread thread;
};

// One streamed request: connect (or reuse an idle connection), write, read
// the head, then the server-sent events as they come. Holds itself alive
// through its handlers; reports once.
class OpenAiClient::Call : public std::enable_shared_from_this<Call> {
 public:
  Call(OpenAiClient* client, Clock::time_point zero, Done done)
      : client_(client), zero_(zero), done_(std::move(done)) {}

  workload::Outcome& outcome() { return outcome_; }
  http::request<http::string_body>& request() { return request_; }

  void Start() {
    Io& io = *client_->io_;
    if (!io.idle.empty()) {
      stream_ = std::move(io.idle.back());
      io.idle.pop_back();
      reused_ = true;
      Write();
      return;
    }
    Connect();
  }

 private:
  void Connect() {
    reused_ = false;
    stream_ = std::make_unique<beast::tcp_stream>(client_->io_->context);
    stream_->async_connect(client_->io_->endpoints,
                           [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
                             if (ec) return self->Fail("NETWORK_ERROR", ec.message());
                             beast::error_code ignored;
                             self->stream_->socket().set_option(tcp::no_delay(true), ignored);
                             self->Write();
                           });
  }

  void Write() {
    http::async_write(*stream_, request_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->RetryOrFail(ec);
                        self->ReadHead();
                      });
  }

  // A reused connection the server has closed meanwhile fails before any
  // answer: the request goes again on a new one.
  void RetryOrFail(beast::error_code ec) {
    if (reused_) {
      buffer_.clear();
      return Connect();
    }
    Fail("NETWORK_ERROR", ec.message());
  }

  void ReadHead() {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<uint64_t>::max());
    http::async_read_header(*stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->RetryOrFail(ec);
                              if (self->parser_->get().result_int() != 200) {
                                return self->ReadErrorBody();
                              }
                              self->ReadEvents();
                            });
  }

  void ReadErrorBody() {
    http::async_read(
        *stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
          const std::string code = absl::StrCat("HTTP_", self->parser_->get().result_int());
          if (ec) return self->Fail(code, ec.message());
          self->Finish(code, ErrorMessage(self->parser_->get().body()));
        });
  }

  void ReadEvents() {
    http::async_read_some(*stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->TakeEvents();
                            if (ec) return self->Fail("INCOMPLETE_STREAM", ec.message());
                            if (!self->parser_->is_done()) return self->ReadEvents();
                            if (self->outcome_.code != "OK") {
                              return self->Finish(self->outcome_.code, self->message_);
                            }
                            if (!self->saw_done_) {
                              return self->Finish("INCOMPLETE_STREAM", "the stream ended early");
                            }
                            self->Finish("OK", "");
                          });
  }

  // Moves the body read so far into server-sent events, each handled at
  // once (so chunks read together share a time).
  void TakeEvents() {
    std::string& body = parser_->get().body();
    pending_ += body;
    body.clear();
    const double now = Seconds(Clock::now());
    size_t begin = 0, end;
    while ((end = pending_.find('\n', begin)) != std::string::npos) {
      absl::string_view line(pending_.data() + begin, end - begin);
      begin = end + 1;
      absl::ConsumeSuffix(&line, "\r");
      if (line.empty()) {
        if (!data_.empty()) OnEvent(now);
        data_.clear();
      } else if (absl::ConsumePrefix(&line, "data:")) {
        absl::ConsumePrefix(&line, " ");
        if (!data_.empty()) data_ += '\n';
        data_.append(line.data(), line.size());
      }
    }
    pending_.erase(0, begin);
  }

  void OnEvent(double now) {
    if (data_ == "[DONE]") {
      saw_done_ = true;
      return;
    }
    const Json chunk = Json::parse(data_, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) {
      SetError("BAD_CHUNK", "a chunk is not a JSON object: " + data_.substr(0, 200));
      return;
    }
    if (auto error = chunk.find("error"); error != chunk.end()) {
      const Json* code =
          error->is_object() && error->contains("code") ? &(*error)["code"] : nullptr;
      SetError(code != nullptr && code->is_number_integer()
                   ? absl::StrCat("HTTP_", code->get<int64_t>())
                   : "STREAM_ERROR",
               error->is_object() && error->contains("message") && (*error)["message"].is_string()
                   ? (*error)["message"].get<std::string>()
                   : error->dump());
      return;
    }
    bool text = false;
    if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array()) {
      for (const Json& choice : *choices) {
        if (!choice.is_object()) continue;
        const Json* piece = nullptr;
        if (auto t = choice.find("text"); t != choice.end()) piece = &*t;
        if (auto delta = choice.find("delta"); delta != choice.end() && delta->is_object()) {
          if (auto c = delta->find("content"); c != delta->end()) piece = &*c;
        }
        // (json::empty() is false for every string: the string's own.)
        text = text || (piece != nullptr && piece->is_string() &&
                        !piece->get_ref<const std::string&>().empty());
      }
    }
    if (text) {
      if (outcome_.ttft < 0) outcome_.ttft = now - outcome_.start;
      outcome_.token_times.push_back(now);
    }
    if (auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
      auto number = [](const Json& object, const char* name) -> std::optional<int64_t> {
        auto it = object.find(name);
        if (it == object.end() || !it->is_number_integer()) return std::nullopt;
        return it->get<int64_t>();
      };
      if (auto n = number(*usage, "completion_tokens")) outcome_.output_tokens = *n;
      if (auto n = number(*usage, "prompt_tokens")) outcome_.prompt_tokens = *n;
      if (auto details = usage->find("prompt_tokens_details");
          details != usage->end() && details->is_object()) {
        if (auto n = number(*details, "cached_tokens")) outcome_.cached_tokens = *n;
      }
    }
  }

  // The first error in a stream decides its code.
  void SetError(std::string code, std::string message) {
    if (outcome_.code != "OK") return;
    outcome_.code = std::move(code);
    message_ = std::move(message);
  }

  void Fail(const std::string& code, const std::string& message) {
    stream_.reset();
    Finish(code, message);
  }

  // Reports (once); a connection the answer left open is kept for reuse.
  void Finish(const std::string& code, const std::string& message) {
    outcome_.e2e = Seconds(Clock::now()) - outcome_.start;
    outcome_.code = code;
    if (code != "OK") client_->failures_.emplace(code, message);
    if (stream_ && parser_ && parser_->is_done() && parser_->keep_alive()) {
      client_->io_->idle.push_back(std::move(stream_));
    }
    done_(std::move(outcome_));
  }

  double Seconds(Clock::time_point t) const {
    return std::chrono::duration<double>(t - zero_).count();
  }

  OpenAiClient* const client_;
  const Clock::time_point zero_;
  const Done done_;
  http::request<http::string_body> request_;
  workload::Outcome outcome_;
  std::unique_ptr<beast::tcp_stream> stream_;
  bool reused_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::string pending_;  // bytes of the stream not yet a whole line
  std::string data_;     // the event being read
  bool saw_done_ = false;
  std::string message_;  // of an error in the stream
};

absl::StatusOr<std::unique_ptr<OpenAiClient>> OpenAiClient::Create(const std::string& address,
                                                                   std::string api_key,
                                                                   Endpoint endpoint) {
  auto split = SplitAddress(address);
  if (!split.ok()) return split.status();
  const auto& [host, port] = *split;
  std::unique_ptr<OpenAiClient> client(new OpenAiClient());
  client->io_ = std::make_unique<Io>();
  beast::error_code ec;
  tcp::resolver resolver(client->io_->context);
  client->io_->endpoints = resolver.resolve(host, port, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", address, ": ", ec.message()));
  }
  client->host_header_ = host.find(':') == std::string::npos ? absl::StrCat(host, ":", port)
                                                             : absl::StrCat("[", host, "]:", port);
  client->api_key_ = std::move(api_key);
  client->endpoint_ = endpoint;
  Io* io = client->io_.get();
  io->thread = std::thread([io] { io->context.run(); });
  return client;
}

OpenAiClient::~OpenAiClient() {
  asio::post(io_->context, [io = io_.get()] { io->idle.clear(); });
  io_->work.reset();
  io_->thread.join();
}

absl::StatusOr<std::vector<ServedModel>> OpenAiClient::ListModels() {
  // On a context of its own, run here, so a silent server times out.
  asio::io_context context;
  beast::tcp_stream stream(context);
  http::request<http::empty_body> request{http::verb::get, "/v1/models", 11};
  request.set(http::field::host, host_header_);
  request.set(http::field::user_agent, "shift-bench");
  if (!api_key_.empty()) request.set(http::field::authorization, "Bearer " + api_key_);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  beast::error_code error;
  stream.expires_after(std::chrono::seconds(10));
  stream.async_connect(io_->endpoints, [&](beast::error_code ec, const tcp::endpoint&) {
    if (ec) {
      error = ec;
      return;
    }
    http::async_write(stream, request, [&](beast::error_code ec, size_t) {
      if (ec) {
        error = ec;
        return;
      }
      http::async_read(stream, buffer, response, [&](beast::error_code ec, size_t) { error = ec; });
    });
  });
  context.run();
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the server at ", host_header_, ": ", error.message()));
  }
  if (response.result_int() != 200) {
    return absl::UnavailableError(absl::StrCat("GET /v1/models on ", host_header_, " answered ",
                                               response.result_int(), ": ",
                                               ErrorMessage(response.body())));
  }
  const Json list = Json::parse(response.body(), nullptr, /*allow_exceptions=*/false);
  std::vector<ServedModel> models;
  if (list.is_object() && list.contains("data") && list["data"].is_array()) {
    for (const Json& entry : list["data"]) {
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_string()) continue;
      ServedModel model{entry["id"].get<std::string>()};
      if (entry.contains("max_model_len") && entry["max_model_len"].is_number_integer()) {
        model.max_model_len = entry["max_model_len"].get<int64_t>();
      }
      models.push_back(std::move(model));
    }
  }
  if (models.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "GET /v1/models on ", host_header_, " lists no model: ", response.body().substr(0, 200)));
  }
  return models;
}

void OpenAiClient::Send(const workload::Request& request, Clock::time_point zero, Done done) {
  auto call = std::make_shared<Call>(this, zero, std::move(done));
  http::request<http::string_body>& r = call->request();
  r.method(http::verb::post);
  r.target(endpoint_ == Endpoint::kChat ? "/v1/chat/completions" : "/v1/completions");
  r.version(11);
  r.set(http::field::host, host_header_);
  r.set(http::field::user_agent, "shift-bench");
  r.set(http::field::content_type, "application/json");
  r.set(http::field::accept, "text/event-stream");
  if (!api_key_.empty()) r.set(http::field::authorization, "Bearer " + api_key_);
  r.body() = OpenAiRequestBody(endpoint_, model_, request);
  r.prepare_payload();
  workload::Outcome& outcome = call->outcome();
  outcome.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  outcome.start = std::chrono::duration<double>(Clock::now() - zero).count();
  asio::post(io_->context, [call] { call->Start(); });
}

}  // namespace shift::bench
