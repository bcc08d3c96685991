// The router's OpenAI-compatible HTTP API (docs/architecture.md, HTTP front):
// POST /v1/completions and /v1/chat/completions, whole or streamed as
// server-sent events, GET /v1/models and GET /health, over the same Router
// as gRPC's Generate and with its guarantees: the same API keys and
// tenants, the same admission lanes (every body is parsed, rendered and
// tokenized on their threads, never on the HTTP server's), the same
// validation, back-pressure from slow readers, and a client that goes away
// frees its KV blocks at once.
//
// Chat prompts are rendered with the model's chat template (bos_token and
// eos_token from tokenizer_config.json, add_generation_prompt, tools,
// chat_template_kwargs) and tokenized parsing special tokens and adding
// none, as transformers and vLLM do. A request with n > 1 submits its first
// choice, and the others once that one's prompt is computed, so they share
// its cached blocks; choice i samples with seed + i when a seed is given.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/security.h"
#include "common/tokenizer.h"
#include "jinja/template.h"
#include "router/admission_pool.h"
#include "router/http_server.h"
#include "router/openai_api.h"
#include "router/router.h"
#include "router/router_metrics.h"

namespace shift {

struct OpenAiServiceOptions {
  // tokenizer_config.json's bos_token / eos_token and the chat template are
  // read from here.
  std::string model_dir;
  // Overrides the model's chat template (as transformers' chat_template).
  std::string chat_template_file;
  int max_choices = 16;
  // Arrays and objects nested deeper than this refuse the body (400).
  int max_json_depth = 64;
};

class OpenAiService {
 public:
  // Everything given must outlive the service; `keys` may be null (no keys).
  static absl::StatusOr<std::unique_ptr<OpenAiService>> Create(Router* router,
                                                               const Tokenizer& tokenizer,
                                                               AdmissionLanes* lanes, ApiKeys* keys,
                                                               RouterMetrics* metrics,
                                                               OpenAiServiceOptions options);

  // The HTTP server's handler.
  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);

 private:
  friend class OpenAiCall;
  OpenAiService(Router* router, const Tokenizer& tokenizer, AdmissionLanes* lanes, ApiKeys* keys,
                RouterMetrics* metrics, OpenAiServiceOptions options);

  // Answers with an error in OpenAI's shape, counted under `endpoint`.
  void ReplyError(HttpExchange& exchange, const char* endpoint, int status,
                  const std::string& message);
  void ReplyJson(HttpExchange& exchange, const char* endpoint, int status, const std::string& body);
  std::string TokenText(int32_t id) const;

  Router* router_;
  const Tokenizer& tokenizer_;
  AdmissionLanes* lanes_;
  ApiKeys* keys_;
  RouterMetrics* metrics_;
  const OpenAiServiceOptions options_;
  OpenAiLimits limits_;
  int64_t created_ = 0;
  // The chat templates (the tool-use one for requests with tools), or why
  // there is none.
  std::optional<jinja::Template> chat_template_, tool_template_;
  std::string no_template_;
  std::string bos_token_, eos_token_;
};

}  // namespace shift
