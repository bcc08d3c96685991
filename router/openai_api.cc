#include "router/openai_api.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace shift {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status TypeError(const char* field, const char* want) {
  return Invalid(absl::StrCat("`", field, "` must be ", want));
}

const Json* Field(const Json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

// An integer field in [lo, hi]; nullopt when absent or null.
absl::StatusOr<std::optional<int64_t>> IntField(const Json& body, const char* name, int64_t lo,
                                                int64_t hi) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<int64_t>();
  int64_t number;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      number = std::numeric_limits<int64_t>::max();
    } else {
      number = value->get<int64_t>();
    }
  } else if (value->is_number_float() && std::trunc(value->get<double>()) == value->get<double>() &&
             std::abs(value->get<double>()) < 9e18) {
    number = static_cast<int64_t>(value->get<double>());
  } else {
    return TypeError(name, "an integer");
  }
  if (number < lo || number > hi) {
    return Invalid(absl::StrCat("`", name, "` must be in [", lo, ", ", hi, "], got ", number));
  }
  return std::optional<int64_t>(number);
}

absl::StatusOr<std::optional<double>> NumberField(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return TypeError(name, "a number");
  const double number = value->get<double>();
  if (!std::isfinite(number)) return TypeError(name, "a finite number");
  return std::optional<double>(number);
}

absl::StatusOr<std::optional<bool>> BoolField(const Json& body, const char* name) {
  const Json* value = Field(body, name);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return TypeError(name, "true or false");
  return std::optional<bool>(value->get<bool>());
}

absl::Status Unsupported(const char* field, const std::string& what) {
  return Invalid(absl::StrCat("`", field, "` is not supported by this server", what));
}

// Fields shift knows and refuses unless they ask for what it does anyway.
absl::Status RefuseUnsupported(const Json& body, int n) {
  for (const char* penalty : {"frequency_penalty", "presence_penalty"}) {
    SHIFT_ASSIGN_OR_RETURN(std::optional<double> value, NumberField(body, penalty));
    if (value && *value != 0) return Unsupported(penalty, " (only 0)");
  }
  if (const Json* bias = Field(body, "logit_bias"); bias != nullptr && !bias->empty()) {
    return Unsupported("logit_bias", "");
  }
  if (const Json* format = Field(body, "response_format"); format != nullptr) {
    const bool text = format->is_object() && format->contains("type") &&
                      (*format)["type"].is_string() && (*format)["type"] == "text";
    if (!text) return Unsupported("response_format", " (only {\"type\": \"text\"})");
  }
  if (const Json* choice = Field(body, "tool_choice"); choice != nullptr) {
    if (!choice->is_string() || (*choice != "none" && *choice != "auto")) {
      return Unsupported("tool_choice", " (only \"none\" or \"auto\": tools reach the template)");
    }
  }
  if (const Json* echo = Field(body, "echo"); echo != nullptr && !(echo->is_boolean() && !*echo)) {
    return Unsupported("echo", "");
  }
  if (const Json* best_of = Field(body, "best_of"); best_of != nullptr) {
    if (!best_of->is_number_integer() || best_of->get<int64_t>() != n) {
      return Unsupported("best_of", " (only equal to n)");
    }
  }
  if (const Json* suffix = Field(body, "suffix");
      suffix != nullptr && !(suffix->is_string() && suffix->get<std::string>().empty())) {
    return Unsupported("suffix", "");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> TokenIds(const Json& list, const std::string& field) {
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (const Json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Invalid(absl::StrCat("`", field, "` holds something that is not a token id"));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  if (ids.empty()) return Invalid(absl::StrCat("`", field, "` is empty"));
  return ids;
}

absl::Status ReadPrompts(const Json& body, const OpenAiLimits& limits, OpenAiRequest* out) {
  const Json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Invalid("`prompt` is required");
  auto text = [](const std::string& s) {
    OpenAiRequest::Prompt p;
    p.text = s;
    return p;
  };
  if (prompt->is_string()) {
    out->prompts.push_back(text(prompt->get<std::string>()));
    return absl::OkStatus();
  }
  const char* want = "a string, a list of strings, a list of token ids or a list of such lists";
  if (!prompt->is_array() || prompt->empty()) return TypeError("prompt", want);
  if ((*prompt)[0].is_number()) {
    OpenAiRequest::Prompt p;
    p.is_ids = true;
    SHIFT_ASSIGN_OR_RETURN(p.ids, TokenIds(*prompt, "prompt"));
    out->prompts.push_back(std::move(p));
    return absl::OkStatus();
  }
  if (static_cast<int>(prompt->size()) > limits.max_prompts) {
    return Invalid(absl::StrCat("`prompt` is a list of ", prompt->size(),
                                " prompts, more than the ", limits.max_prompts, " allowed"));
  }
  for (const Json& item : *prompt) {
    if (item.is_string()) {
      out->prompts.push_back(text(item.get<std::string>()));
    } else if (item.is_array()) {
      OpenAiRequest::Prompt p;
      p.is_ids = true;
      SHIFT_ASSIGN_OR_RETURN(p.ids, TokenIds(item, "prompt"));
      out->prompts.push_back(std::move(p));
    } else {
      return TypeError("prompt", want);
    }
  }
  return absl::OkStatus();
}

absl::Status ReadMessages(const Json& body, OpenAiRequest* out) {
  const Json* messages = Field(body, "messages");
  if (messages == nullptr) return Invalid("`messages` is required");
  if (!messages->is_array() || messages->empty()) {
    return TypeError("messages", "a non-empty list of messages");
  }
  Json normalized = Json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    if (!message.is_object()) return Invalid(absl::StrCat("`messages[", i, "]` is not an object"));
    const Json* role = Field(message, "role");
    static const char* const kRoles[] = {"system", "user", "assistant", "tool", "developer"};
    if (role == nullptr || !role->is_string() ||
        std::none_of(std::begin(kRoles), std::end(kRoles),
                     [&](const char* r) { return *role == r; })) {
      return Invalid(absl::StrCat("`messages[", i,
                                  "].role` must be system, user, assistant, tool or developer"));
    }
    Json copy = message;
    const Json* content = Field(message, "content");
    if (content == nullptr) {
      if (*role != "assistant") {
        return Invalid(absl::StrCat("`messages[", i, "].content` is required"));
      }
    } else {
      SHIFT_ASSIGN_OR_RETURN(std::string text, ChatContentText(*content, i));
      copy["content"] = std::move(text);
    }
    normalized.push_back(std::move(copy));
  }
  out->template_vars["messages"] = std::move(normalized);
  return absl::OkStatus();
}

double Logprob(float value) {
  // -inf (a token outside top-k/top-p) has no JSON number; vLLM's -9999.
  return std::isfinite(value) ? static_cast<double>(value) : -9999.0;
}

Json ByteList(const std::string& bytes) {
  Json list = Json::array();
  for (unsigned char c : bytes) list.push_back(static_cast<int>(c));
  return list;
}

Json CompletionLogprobs(const std::vector<v1::TokenLogprob>& logprobs, int num,
                        const TokenText& token_text) {
  Json tokens = Json::array(), values = Json::array(), tops = Json::array(),
       offsets = Json::array();
  int64_t offset = 0;
  for (const v1::TokenLogprob& lp : logprobs) {
    const std::string text = token_text(lp.token_id());
    tokens.push_back(text);
    values.push_back(Logprob(lp.logprob()));
    offsets.push_back(offset);
    offset += static_cast<int64_t>(text.size());
    Json top = Json::object();
    for (int k = 0; k < lp.top_size() && k < num; ++k) {
      top[token_text(lp.top(k).token_id())] = Logprob(lp.top(k).logprob());
    }
    if (num > 0) {
      tops.push_back(std::move(top));
    } else {
      tops.push_back(nullptr);
    }
  }
  return Json{{"tokens", tokens},
              {"token_logprobs", values},
              {"top_logprobs", tops},
              {"text_offset", offsets}};
}

Json ChatLogprobs(const std::vector<v1::TokenLogprob>& logprobs, int num,
                  const TokenText& token_text) {
  Json content = Json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    const std::string text = token_text(lp.token_id());
    Json top = Json::array();
    for (int k = 0; k < lp.top_size() && k < num; ++k) {
      const std::string alt = token_text(lp.top(k).token_id());
      top.push_back(Json{
          {"token", alt}, {"logprob", Logprob(lp.top(k).logprob())}, {"bytes", ByteList(alt)}});
    }
    content.push_back(Json{{"token", text},
                           {"logprob", Logprob(lp.logprob())},
                           {"bytes", ByteList(text)},
                           {"top_logprobs", std::move(top)}});
  }
  return Json{{"content", std::move(content)}, {"refusal", nullptr}};
}

Json LogprobsJson(OpenAiEndpoint endpoint, const std::vector<v1::TokenLogprob>& logprobs, int num,
                  const TokenText& token_text) {
  if (num < 0) return nullptr;
  return endpoint == OpenAiEndpoint::kChat ? ChatLogprobs(logprobs, num, token_text)
                                           : CompletionLogprobs(logprobs, num, token_text);
}

}  // namespace

int JsonNestingDepth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

absl::StatusOr<std::string> ChatContentText(const Json& content, size_t i) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    return Invalid(absl::StrCat("`messages[", i, "].content` must be a string or a list of parts"));
  }
  std::vector<std::string> texts;
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return Invalid(absl::StrCat("`messages[", i,
                                  "].content` may hold only text parts "
                                  "({\"type\": \"text\", \"text\": ...}): this model reads text"));
    }
    texts.push_back(part["text"].get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const Json& body,
                                                 const OpenAiLimits& limits) {
  if (!body.is_object()) return Invalid("the request body must be a JSON object");
  OpenAiRequest out;
  out.endpoint = endpoint;
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  if (const Json* model = Field(body, "model"); model != nullptr) {
    if (!model->is_string()) return TypeError("model", "a string");
    if (*model != limits.model_name) {
      return absl::NotFoundError(absl::StrCat("The model `", model->get<std::string>(),
                                              "` does not exist; this server serves `",
                                              limits.model_name, "`"));
    }
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> n, IntField(body, "n", 1, limits.max_choices));
  out.n = static_cast<int>(n.value_or(1));
  SHIFT_RETURN_IF_ERROR(RefuseUnsupported(body, out.n));
  if (chat) {
    SHIFT_RETURN_IF_ERROR(ReadMessages(body, &out));
  } else {
    SHIFT_RETURN_IF_ERROR(ReadPrompts(body, limits, &out));
  }

  v1::SamplingParams& s = out.sampling;
  const int64_t kMaxTokens = std::numeric_limits<int32_t>::max();
  SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens,
                         IntField(body, "max_tokens", 1, kMaxTokens));
  SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> max_completion,
                         IntField(body, "max_completion_tokens", 1, kMaxTokens));
  if (max_completion) max_tokens = max_completion;
  s.set_max_tokens(static_cast<uint32_t>(max_tokens.value_or(0)));
  SHIFT_ASSIGN_OR_RETURN(std::optional<double> temperature, NumberField(body, "temperature"));
  if (temperature) {
    if (*temperature < 0) return Invalid("`temperature` must be >= 0");
    s.set_temperature(static_cast<float>(*temperature));
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<double> top_p, NumberField(body, "top_p"));
  if (top_p) {
    if (*top_p <= 0 || *top_p > 1) return Invalid("`top_p` must be in (0, 1]");
    s.set_top_p(static_cast<float>(*top_p));
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> top_k,
                         IntField(body, "top_k", -1, std::numeric_limits<int32_t>::max()));
  if (top_k) s.set_top_k(static_cast<uint32_t>(std::max<int64_t>(0, *top_k)));
  SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> seed,
                         IntField(body, "seed", std::numeric_limits<int64_t>::min(),
                                  std::numeric_limits<int64_t>::max()));
  if (seed) s.set_seed(static_cast<uint64_t>(*seed));
  if (const Json* stop = Field(body, "stop"); stop != nullptr) {
    if (stop->is_string()) {
      s.add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (static_cast<int64_t>(stop->size()) > limits.max_stop_strings) {
        return Invalid(absl::StrCat("`stop` has ", stop->size(), " strings, more than the ",
                                    limits.max_stop_strings, " allowed"));
      }
      for (const Json& item : *stop) {
        if (!item.is_string()) return TypeError("stop", "a string or a list of strings");
        s.add_stop(item.get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or a list of strings");
    }
  }
  if (const Json* ids = Field(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "a list of token ids");
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return TypeError("stop_token_ids", "a list of token ids");
      }
      s.add_stop_token_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, BoolField(body, "ignore_eos"));
  s.set_ignore_eos(ignore_eos.value_or(false));
  SHIFT_ASSIGN_OR_RETURN(std::optional<bool> stream, BoolField(body, "stream"));
  out.stream = stream.value_or(false);
  if (const Json* options = Field(body, "stream_options"); options != nullptr) {
    if (!options->is_object()) return TypeError("stream_options", "an object");
    SHIFT_ASSIGN_OR_RETURN(std::optional<bool> usage, BoolField(*options, "include_usage"));
    out.include_usage = usage.value_or(false) && out.stream;
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<double> tpot, NumberField(body, "tpot_slo_ms"));
  out.tpot_slo_ms = tpot.value_or(0);
  SHIFT_ASSIGN_OR_RETURN(std::optional<bool> special, BoolField(body, "add_special_tokens"));
  out.add_special_tokens = special.value_or(!chat);
  const int64_t max_top = limits.max_top_logprobs;
  if (chat) {
    SHIFT_ASSIGN_OR_RETURN(std::optional<bool> logprobs, BoolField(body, "logprobs"));
    SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> top, IntField(body, "top_logprobs", 0, max_top));
    if (top && *top > 0 && !logprobs.value_or(false)) {
      return Invalid("`top_logprobs` needs `logprobs` set to true");
    }
    if (logprobs.value_or(false)) out.logprobs = static_cast<int>(top.value_or(0));
  } else if (const Json* logprobs = Field(body, "logprobs"); logprobs != nullptr) {
    if (logprobs->is_boolean()) {
      if (logprobs->get<bool>()) out.logprobs = 0;
    } else {
      SHIFT_ASSIGN_OR_RETURN(std::optional<int64_t> num, IntField(body, "logprobs", 0, max_top));
      out.logprobs = static_cast<int>(*num);
    }
  }
  if (out.logprobs >= 0) {
    s.set_return_logprob(true);
    s.set_top_logprobs(static_cast<uint32_t>(out.logprobs));
  }
  if (const Json* user = Field(body, "user"); user != nullptr && !user->is_string()) {
    return TypeError("user", "a string");
  }
  if (chat) {
    if (const Json* tools = Field(body, "tools"); tools != nullptr) {
      if (!tools->is_array()) return TypeError("tools", "a list");
      out.template_vars["tools"] = *tools;
      out.has_tools = !tools->empty();
    }
    SHIFT_ASSIGN_OR_RETURN(std::optional<bool> generation,
                           BoolField(body, "add_generation_prompt"));
    out.template_vars["add_generation_prompt"] = generation.value_or(true);
    if (const Json* kwargs = Field(body, "chat_template_kwargs"); kwargs != nullptr) {
      if (!kwargs->is_object()) return TypeError("chat_template_kwargs", "an object");
      for (const auto& [key, value] : kwargs->items()) {
        if (key == "messages") return Invalid("`chat_template_kwargs` may not set messages");
        out.template_vars[key] = value;
      }
    }
  }
  return out;
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string OpenAiErrorBody(int http_status, const std::string& message) {
  const char* type = "server_error";
  switch (http_status) {
    case 400:
      type = "invalid_request_error";
      break;
    case 401:
      type = "authentication_error";
      break;
    case 404:
      type = "not_found_error";
      break;
    case 405:
      type = "invalid_request_error";
      break;
    case 413:
      type = "request_too_large";
      break;
    case 429:
      type = "rate_limit_error";
      break;
    case 503:
      type = "service_unavailable";
      break;
    default:
      break;
  }
  Json error{
      {"error",
       Json{{"message", message}, {"type", type}, {"param", nullptr}, {"code", http_status}}}};
  return error.dump(-1, ' ', false, Json::error_handler_t::replace);
}

const char* OpenAiFinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "abort";
    default:
      return "stop";
  }
}

Json OpenAiUsage(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  return Json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"prompt_tokens_details", Json{{"cached_tokens", cached_tokens}}}};
}

Json OpenAiResponse(OpenAiEndpoint endpoint, const std::string& id, int64_t created,
                    const std::string& model, const std::vector<ChoiceOutput>& choices,
                    const Json& usage, int logprobs, const TokenText& token_text) {
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  Json list = Json::array();
  for (const ChoiceOutput& c : choices) {
    Json choice{{"index", c.index}};
    if (chat) {
      choice["message"] = Json{{"role", "assistant"},
                               {"content", c.text},
                               {"refusal", nullptr},
                               {"tool_calls", Json::array()}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = LogprobsJson(endpoint, c.logprobs, logprobs, token_text);
    choice["finish_reason"] = OpenAiFinishReason(c.finish_reason);
    if (!c.stop_string.empty()) choice["stop_reason"] = c.stop_string;
    list.push_back(std::move(choice));
  }
  return Json{{"id", id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", std::move(list)},
              {"usage", usage}};
}

Json OpenAiChunk(OpenAiEndpoint endpoint, const std::string& id, int64_t created,
                 const std::string& model, int index, const std::string& text,
                 const std::vector<v1::TokenLogprob>& logprobs, int num_logprobs, bool first,
                 std::optional<v1::FinishReason> finish, const TokenText& token_text) {
  const bool chat = endpoint == OpenAiEndpoint::kChat;
  Json choice{{"index", index}};
  if (chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish) || !logprobs.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] =
      logprobs.empty() ? Json(nullptr) : LogprobsJson(endpoint, logprobs, num_logprobs, token_text);
  choice["finish_reason"] = finish ? Json(OpenAiFinishReason(*finish)) : Json(nullptr);
  return Json{{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", Json::array({std::move(choice)})}};
}

Json OpenAiUsageChunk(OpenAiEndpoint endpoint, const std::string& id, int64_t created,
                      const std::string& model, const Json& usage) {
  return Json{
      {"id", id},
      {"object", endpoint == OpenAiEndpoint::kChat ? "chat.completion.chunk" : "text_completion"},
      {"created", created},
      {"model", model},
      {"choices", Json::array()},
      {"usage", usage}};
}

std::string SseEvent(const Json& value) {
  return absl::StrCat("data: ", value.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

}  // namespace shift
