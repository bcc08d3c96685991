// OpenAI's HTTP API as shift speaks it: what a /v1/completions or
// /v1/chat/completions body asks for, read and checked into an
// OpenAiRequest, and the JSON of the answers (whole responses, streamed
// chunks, errors). Pure functions of their inputs, so the shapes are tested
// without a server; router/openai_service.h runs the requests.
//
// Unknown fields are ignored, as vLLM does. Known fields shift does not
// support are refused by name (frequency_penalty or presence_penalty other
// than 0, logit_bias, response_format other than text, tool_choice other
// than none or auto, echo, best_of other than n, suffix).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "shift/v1/generation.pb.h"

namespace shift {

enum class OpenAiEndpoint { kCompletions, kChat };

struct OpenAiLimits {
  std::string model_name;
  int max_choices = 16;  // n
  int64_t max_stop_strings = 16;
  uint32_t max_top_logprobs = 20;
  int max_prompts = 64;  // a completions prompt given as a list
};

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  // Completions: each prompt, as text or as token ids (one of the two).
  struct Prompt {
    std::string text;
    std::vector<int32_t> ids;
    bool is_ids = false;
  };
  std::vector<Prompt> prompts;
  // Chat: the template's variables (messages, tools, add_generation_prompt,
  // chat_template_kwargs merged in); bos_token and eos_token are the
  // service's to add.
  nlohmann::ordered_json template_vars;
  bool has_tools = false;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  // max_tokens unset (0): up to the context length.
  v1::SamplingParams sampling;
  // Completions: tokens get their tokenizer's special tokens unless false;
  // chat: none unless true (the template holds them).
  bool add_special_tokens = true;
  // Log probabilities: none (-1), else how many alternatives per token.
  int logprobs = -1;
  // shift's own: GenerateRequest.tpot_slo_ms (0: the router's).
  double tpot_slo_ms = 0;
};

// Reads a request body. InvalidArgument naming the field for a bad one,
// NotFound for a model this server does not serve.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint,
                                                 const nlohmann::ordered_json& body,
                                                 const OpenAiLimits& limits);

// The deepest nesting of arrays and objects in `text` (JSON), counted
// without parsing, to refuse a hostile body before a recursive parser
// meets it.
int JsonNestingDepth(const std::string& text);

// A chat message's content as the template sees it: a string, or the text
// of a list of text parts joined by newlines. InvalidArgument for other
// parts (images, audio).
absl::StatusOr<std::string> ChatContentText(const nlohmann::ordered_json& content,
                                            size_t message_index);

// The HTTP status of an error of the router's (absl code).
int HttpStatusOf(absl::StatusCode code);

// {"error": {"message", "type", "param", "code"}}, OpenAI's error shape.
std::string OpenAiErrorBody(int http_status, const std::string& message);

// What one choice produced, for the response's JSON.
struct ChoiceOutput {
  int index = 0;
  std::string text;
  std::vector<v1::TokenLogprob> logprobs;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  std::string stop_string;
};

// Names of tokens for log probabilities: the token's text (bytes), as the
// tokenizer holds it.
using TokenText = std::function<std::string(int32_t id)>;

// "length" or "stop" (EOS and stop strings or ids).
const char* OpenAiFinishReason(v1::FinishReason reason);

// usage: prompt, completion and total tokens, cached prompt tokens.
nlohmann::ordered_json OpenAiUsage(int64_t prompt_tokens, int64_t completion_tokens,
                                   int64_t cached_tokens);

// A whole (non-streamed) response.
nlohmann::ordered_json OpenAiResponse(OpenAiEndpoint endpoint, const std::string& id,
                                      int64_t created, const std::string& model,
                                      const std::vector<ChoiceOutput>& choices,
                                      const nlohmann::ordered_json& usage, int logprobs,
                                      const TokenText& token_text);

// One streamed chunk of choice `index`: its new text and logprobs, its role
// (chat, first chunk), or its finish reason.
nlohmann::ordered_json OpenAiChunk(OpenAiEndpoint endpoint, const std::string& id, int64_t created,
                                   const std::string& model, int index, const std::string& text,
                                   const std::vector<v1::TokenLogprob>& logprobs, int num_logprobs,
                                   bool first, std::optional<v1::FinishReason> finish,
                                   const TokenText& token_text);

// The last chunk of a stream with include_usage: no choices, the usage.
nlohmann::ordered_json OpenAiUsageChunk(OpenAiEndpoint endpoint, const std::string& id,
                                        int64_t created, const std::string& model,
                                        const nlohmann::ordered_json& usage);

// "data: <json>\n\n" (invalid UTF-8 in token texts replaced).
std::string SseEvent(const nlohmann::ordered_json& value);

}  // namespace shift
