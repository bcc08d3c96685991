// shift-bench's client for an OpenAI-compatible HTTP server (shift-router's
// --http_port, or any server that speaks the API): each workload request is
// one streamed POST /v1/completions or /v1/chat/completions, timed into a
// workload::Outcome as a gRPC Generate call is: TTFT at the first chunk with
// text, one token time per such chunk, token counts from the usage chunk
// that stream_options.include_usage asks for. Every connection's I/O runs on
// one thread (Boost.Beast on Asio, event-driven, no thread per request);
// keep-alive connections are reused. Plain HTTP only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workload/workload.h"

namespace shift::bench {

enum class Endpoint { kCompletions, kChat };

// A model as GET /v1/models lists it.
struct ServedModel {
  std::string id;
  int64_t max_model_len = 0;  // 0: the server does not say
};

// One word per prompt token id (the id picks it from common English words,
// each a single token, after a space, in the usual BPE vocabularies), so a
// chat prompt is about as long as the workload's prompt and prompts that
// share an id prefix share a text prefix (a trace's cached blocks).
std::string SyntheticText(const std::vector<int32_t>& ids);

// The JSON body of `request` as one streamed request to `endpoint`:
// completions send the prompt's token ids, chat one user message of
// SyntheticText; greedy, ignoring EOS, with the usage chunk.
std::string OpenAiRequestBody(Endpoint endpoint, const std::string& model,
                              const workload::Request& request);

class OpenAiClient {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(workload::Outcome)>;

  // `address` is host:port, with or without http://. `api_key` (if any)
  // goes as "Authorization: Bearer". Requests ask for `model`, which may be
  // set later (after ListModels).
  static absl::StatusOr<std::unique_ptr<OpenAiClient>> Create(const std::string& address,
                                                              std::string api_key,
                                                              Endpoint endpoint);
  // Waits for the calls in flight; call it after every Send's done.
  ~OpenAiClient();

  // GET /v1/models (blocking, at most 10 s).
  absl::StatusOr<std::vector<ServedModel>> ListModels();
  void set_model(std::string model) { model_ = std::move(model); }

  // Sends `request` now; `done` gets its outcome, on the client's thread,
  // times in seconds from `zero`. A failure is the outcome's code:
  // HTTP_<status> for an error status or an error in the stream,
  // INCOMPLETE_STREAM for a stream cut before [DONE], NETWORK_ERROR when
  // the server cannot be reached or the connection breaks.
  void Send(const workload::Request& request, Clock::time_point zero, Done done);

  // The first message of each failure code seen so far. Read it once every
  // done has run.
  std::map<std::string, std::string> FailureMessages() const { return failures_; }

 private:
  class Call;
  struct Io;
  OpenAiClient() = default;

  std::string host_header_;
  std::string api_key_;
  Endpoint endpoint_ = Endpoint::kCompletions;
  std::string model_;
  std::unique_ptr<Io> io_;
  std::map<std::string, std::string> failures_;  // on the I/O thread
};

}  // namespace shift::bench
