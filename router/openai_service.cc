#include "router/openai_service.h"

#include <filesystem>
#include <random>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/defaults.h"
#include "common/file_util.h"
#include "common/status.h"
#include "jinja/chat_template.h"

namespace shift {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kCompletions[] = "completions";
constexpr char kChat[] = "chat_completions";
constexpr char kModels[] = "models";
constexpr char kHealth[] = "health";

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 random(std::random_device{}());
  return absl::StrFormat("%s%016x%016x", prefix, random(), random());
}

// tokenizer_config.json's `field` (bos_token, eos_token): a string or an
// object with "content"; "" when absent.
std::string ConfigToken(const Json& config, const char* field) {
  if (!config.is_object()) return "";
  auto it = config.find(field);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

// One completions or chat completions request: its choices are the
// router's requests (their sinks), its exchange the client's connection.
// Keeps itself alive while the router may call a sink of its.
class OpenAiCall : public std::enable_shared_from_this<OpenAiCall> {
 public:
  OpenAiCall(OpenAiService* service, OpenAiEndpoint endpoint,
             std::shared_ptr<HttpExchange> exchange, std::string tenant, std::string client)
      : service_(service),
        endpoint_(endpoint),
        endpoint_label_(endpoint == OpenAiEndpoint::kChat ? kChat : kCompletions),
        exchange_(std::move(exchange)),
        tenant_(std::move(tenant)),
        client_(std::move(client)),
        id_(RandomId(endpoint == OpenAiEndpoint::kChat ? "chatcmpl-" : "cmpl-")),
        created_(absl::ToUnixSeconds(absl::Now())) {}

  // Queued on an admission lane: parses, renders, tokenizes and submits.
  void Admit(const std::string& body) {
    std::weak_ptr<OpenAiCall> weak = weak_from_this();
    exchange_->SetCallbacks(
        [weak] {
          if (auto self = weak.lock()) self->OnClientGone();
        },
        [weak] {
          if (auto self = weak.lock()) self->OnDrained();
        });
    if (exchange_->closed()) return;
    absl::Status status = Prepare(body);
    if (!status.ok()) return Refuse(status);
    {
      absl::MutexLock lock(&mu_);
      keep_ = shared_from_this();
    }
    // The first choice of every prompt now; the others after its prefill.
    for (size_t p = 0; p < prompts_.size(); ++p) {
      status = SubmitChoice(static_cast<int>(p * request_.n));
      if (!status.ok()) break;
    }
    std::vector<uint64_t> cancel;
    std::unique_ptr<std::shared_ptr<OpenAiCall>> release;
    {
      absl::MutexLock lock(&mu_);
      if (!status.ok()) {
        if (!finished_) {
          finished_ = true;
          cancel = LiveIds();
          service_->ReplyError(*exchange_, endpoint_label_, HttpStatusOf(status.code()),
                               std::string(status.message()));
        }
      } else if (request_.stream && !finished_ && !closed_) {
        exchange_->StartStream(200, "text/event-stream");
        service_->metrics_->HttpResponse(endpoint_label_, 200);
        started_ = true;
        for (std::string& event : early_) exchange_->Write(std::move(event));
        early_.clear();
        if (ended_stream_) exchange_->End();
      }
    }
    CancelAll(cancel);
    MaybeRelease();
  }

 private:
  // One choice: a router request and what it produced.
  struct Choice final : RequestSink {
    OpenAiCall* call = nullptr;
    int index = 0;
    int prompt = 0;
    enum class State { kPending, kSubmitting, kLive, kEnded } state = State::kPending;
    uint64_t router_id = 0;
    bool paused = false;
    bool sent_first = false;
    ChoiceOutput output;
    v1::Usage usage;

    bool OnDelta(v1::GenerateDelta delta) override { return call->OnDelta(*this, delta); }
    void OnFinal(v1::GenerateFinal final) override { call->OnFinal(*this, final); }
    void OnError(absl::Status status) override { call->OnError(*this, status); }
  };

  absl::Status Prepare(const std::string& body) {
    const OpenAiServiceOptions& o = service_->options_;
    if (JsonNestingDepth(body) > o.max_json_depth) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request body nests arrays and objects deeper than ", o.max_json_depth));
    }
    const Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) {
      return absl::InvalidArgumentError("the request body is not valid JSON (in UTF-8)");
    }
    SHIFT_ASSIGN_OR_RETURN(request_, ParseOpenAiRequest(endpoint_, parsed, service_->limits_));
    Router& router = *service_->router_;
    if (endpoint_ == OpenAiEndpoint::kChat) {
      const jinja::Template* chat =
          request_.has_tools && service_->tool_template_
              ? &*service_->tool_template_
              : (service_->chat_template_ ? &*service_->chat_template_ : nullptr);
      if (chat == nullptr) return absl::InvalidArgumentError(service_->no_template_);
      Json& vars = request_.template_vars;
      if (!vars.contains("bos_token")) vars["bos_token"] = service_->bos_token_;
      if (!vars.contains("eos_token")) vars["eos_token"] = service_->eos_token_;
      absl::StatusOr<std::string> text = chat->Render(vars);
      if (!text.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the chat template: ", text.status().message()));
      }
      SHIFT_ASSIGN_OR_RETURN(
          std::vector<int32_t> ids,
          router.EncodePrompt(*text, /*parse_special=*/true, request_.add_special_tokens));
      prompts_.push_back(std::move(ids));
    } else {
      for (OpenAiRequest::Prompt& prompt : request_.prompts) {
        if (prompt.is_ids) {
          prompts_.push_back(std::move(prompt.ids));
        } else {
          SHIFT_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                                 router.EncodePrompt(prompt.text, /*parse_special=*/false,
                                                     request_.add_special_tokens));
          prompts_.push_back(std::move(ids));
        }
      }
    }
    const int64_t max_len = router.options().scheduler.max_model_len;
    max_tokens_.resize(prompts_.size());
    for (size_t p = 0; p < prompts_.size(); ++p) {
      const int64_t length = static_cast<int64_t>(prompts_[p].size());
      if (length == 0) return absl::InvalidArgumentError("the prompt is empty");
      if (request_.sampling.max_tokens() > 0) {
        max_tokens_[p] = request_.sampling.max_tokens();
      } else if (length >= max_len) {
        return absl::InvalidArgumentError(absl::StrCat("the prompt has ", length,
                                                       " tokens, leaving no room under the ",
                                                       max_len, " of --max_model_len"));
      } else {
        max_tokens_[p] = static_cast<uint32_t>(max_len - length);
      }
    }
    choices_.resize(prompts_.size() * request_.n);
    for (size_t i = 0; i < choices_.size(); ++i) {
      choices_[i].call = this;
      choices_[i].index = static_cast<int>(i);
      choices_[i].prompt = static_cast<int>(i / request_.n);
      choices_[i].output.index = static_cast<int>(i);
    }
    return absl::OkStatus();
  }

  // Submits choice `i` to the router (on an admission thread).
  absl::Status SubmitChoice(int i) {
    Choice& c = choices_[i];
    v1::GenerateRequest request;
    *request.mutable_sampling() = request_.sampling;
    request.set_tpot_slo_ms(request_.tpot_slo_ms);
    request.mutable_sampling()->set_max_tokens(max_tokens_[c.prompt]);
    if (request_.sampling.has_seed()) {
      request.mutable_sampling()->set_seed(request_.sampling.seed() + (i % request_.n));
    }
    const std::vector<int32_t>& ids = prompts_[c.prompt];
    request.mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || closed_) return absl::OkStatus();
      c.state = Choice::State::kSubmitting;
    }
    absl::StatusOr<uint64_t> id = service_->router_->Submit(request, &c, tenant_);
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      if (!id.ok()) {
        c.state = Choice::State::kEnded;
        return id.status();
      }
      c.router_id = *id;
      cancel = closed_ || finished_;
      if (c.state == Choice::State::kSubmitting) {
        c.state = cancel ? Choice::State::kEnded : Choice::State::kLive;
      }
    }
    if (cancel) CancelAll({*id});
    return absl::OkStatus();
  }

  // The first choice of prompt `p` has its first token (or ended): its
  // siblings go now, to share its blocks.
  void SubmitSiblings(int first) {
    if (request_.n == 1) return;
    auto self = shared_from_this();
    const absl::Status queued = service_->lanes_->For(0)->Add(client_, [self, first] {
      absl::Status status;
      for (int i = first + 1; i < first + self->request_.n && status.ok(); ++i) {
        status = self->SubmitChoice(i);
      }
      if (!status.ok()) self->Fail(status);
      self->MaybeRelease();
    });
    if (!queued.ok()) Fail(queued);
  }

  bool OnDelta(Choice& c, const v1::GenerateDelta& delta) {
    bool siblings = false;
    bool room = true;
    {
      absl::MutexLock lock(&mu_);
      if (c.state != Choice::State::kLive && c.state != Choice::State::kSubmitting) return true;
      siblings = !c.sent_first && c.index % request_.n == 0;
      c.output.text += delta.text();
      std::vector<v1::TokenLogprob> logprobs(delta.logprobs().begin(), delta.logprobs().end());
      if (request_.stream) {
        const Json chunk = OpenAiChunk(endpoint_, id_, created_, service_->limits_.model_name,
                                       c.index, delta.text(), logprobs, request_.logprobs,
                                       !c.sent_first, std::nullopt, TokenTextFn());
        room = Emit(SseEvent(chunk));
        c.output.text.clear();  // sent: not kept
        if (!room) c.paused = true;
      } else {
        c.output.logprobs.insert(c.output.logprobs.end(), logprobs.begin(), logprobs.end());
      }
      c.sent_first = true;
    }
    if (siblings) SubmitSiblings(c.index);
    return room;
  }

  void OnFinal(Choice& c, const v1::GenerateFinal& final) {
    bool siblings = false;
    {
      absl::MutexLock lock(&mu_);
      if (c.state == Choice::State::kEnded) return;
      siblings = !c.sent_first && c.index % request_.n == 0;
      c.state = Choice::State::kEnded;
      c.output.finish_reason = final.finish_reason();
      c.output.stop_string = final.stop_string();
      c.usage = final.usage();
      if (request_.stream && !finished_) {
        Emit(SseEvent(OpenAiChunk(endpoint_, id_, created_, service_->limits_.model_name, c.index,
                                  "", {}, request_.logprobs, !c.sent_first, final.finish_reason(),
                                  TokenTextFn())));
      }
      c.sent_first = true;
      if (!siblings) MaybeFinish();
    }
    if (siblings) SubmitSiblings(c.index);
    MaybeRelease();
  }

  void OnError(Choice& c, const absl::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      c.state = Choice::State::kEnded;
    }
    Fail(status);
    MaybeRelease();
  }

  // Ends the call with `status` (its other choices are cancelled).
  void Fail(const absl::Status& status) {
    std::vector<uint64_t> cancel;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      cancel = LiveIds();
      const int http = HttpStatusOf(status.code());
      if (started_) {
        exchange_->Write(
            absl::StrCat("data: ", OpenAiErrorBody(http, std::string(status.message())),
                         "\n\ndata: [DONE]\n\n"));
        exchange_->End();
      } else {
        // Not started (or not streamed): the error is the answer.
        early_.clear();
        service_->ReplyError(*exchange_, endpoint_label_, http, std::string(status.message()));
      }
    }
    CancelAll(cancel);
  }

  // When every choice has ended: the usage, [DONE] or the whole response.
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    for (const Choice& c : choices_) {
      if (c.state != Choice::State::kEnded) return;
    }
    finished_ = true;
    int64_t prompt_tokens = 0, completion_tokens = 0, cached = 0;
    for (const Choice& c : choices_) {
      completion_tokens += c.usage.completion_tokens();
      if (c.index % request_.n == 0) {
        prompt_tokens += c.usage.prompt_tokens();
        cached += c.usage.cached_prompt_tokens();
      }
    }
    const Json usage = OpenAiUsage(prompt_tokens, completion_tokens, cached);
    const std::string& model = service_->limits_.model_name;
    if (request_.stream) {
      if (request_.include_usage) {
        Emit(SseEvent(OpenAiUsageChunk(endpoint_, id_, created_, model, usage)));
      }
      Emit("data: [DONE]\n\n");
      if (started_) {
        exchange_->End();
      } else {
        ended_stream_ = true;
      }
      return;
    }
    std::vector<ChoiceOutput> outputs;
    for (Choice& c : choices_) outputs.push_back(std::move(c.output));
    const Json response = OpenAiResponse(endpoint_, id_, created_, model, outputs, usage,
                                         request_.logprobs, TokenTextFn());
    service_->ReplyJson(*exchange_, endpoint_label_, 200,
                        response.dump(-1, ' ', false, Json::error_handler_t::replace));
  }

  // Sends (or keeps, before the stream starts) one event; false when the
  // client holds too much unsent.
  bool Emit(std::string event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!started_) {
      early_.push_back(std::move(event));
      return true;
    }
    return exchange_->Write(std::move(event));
  }

  void OnClientGone() {
    std::vector<uint64_t> cancel;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      cancel = LiveIds();
    }
    CancelAll(cancel);
    MaybeRelease();
  }

  void OnDrained() {
    std::vector<uint64_t> resume;
    {
      absl::MutexLock lock(&mu_);
      for (Choice& c : choices_) {
        if (c.paused && c.state == Choice::State::kLive) resume.push_back(c.router_id);
        c.paused = false;
      }
    }
    for (uint64_t id : resume) service_->router_->Resume(id);
  }

  // Live choices' router ids, now ended (their sinks are not called again
  // once the caller has cancelled them).
  std::vector<uint64_t> LiveIds() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<uint64_t> ids;
    for (Choice& c : choices_) {
      if (c.state == Choice::State::kLive) {
        ids.push_back(c.router_id);
        c.state = Choice::State::kEnded;
      }
    }
    return ids;
  }

  // Never under mu_: Cancel waits for a sink call in progress, which may
  // be waiting for mu_.
  void CancelAll(const std::vector<uint64_t>& ids) {
    for (uint64_t id : ids) service_->router_->Cancel(id, absl::StatusCode::kCancelled);
  }

  // Lets the call go once no choice can be called by the router again.
  void MaybeRelease() {
    std::shared_ptr<OpenAiCall> last;
    {
      absl::MutexLock lock(&mu_);
      if (!keep_) return;
      for (const Choice& c : choices_) {
        if (c.state == Choice::State::kLive || c.state == Choice::State::kSubmitting) return;
      }
      const bool more = !finished_ && !closed_;  // siblings still to submit
      if (more) return;
      last = std::move(keep_);
    }
  }

  TokenText TokenTextFn() const {
    const OpenAiService* service = service_;
    return [service](int32_t id) { return service->TokenText(id); };
  }

  void Refuse(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    service_->ReplyError(*exchange_, endpoint_label_, HttpStatusOf(status.code()),
                         std::string(status.message()));
  }

  OpenAiService* const service_;
  const OpenAiEndpoint endpoint_;
  const char* const endpoint_label_;
  const std::shared_ptr<HttpExchange> exchange_;
  const std::string tenant_, client_, id_;
  const int64_t created_;
  // Set in Prepare, then read only.
  OpenAiRequest request_;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<uint32_t> max_tokens_;
  std::vector<Choice> choices_;  // sized once; the router holds pointers into it

  absl::Mutex mu_;
  std::shared_ptr<OpenAiCall> keep_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;   // the stream's head is sent
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // the answer is complete (or failed)
  bool closed_ ABSL_GUARDED_BY(mu_) = false;    // the client went away
  bool ended_stream_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> early_ ABSL_GUARDED_BY(mu_);  // events before the head
};

OpenAiService::OpenAiService(Router* router, const Tokenizer& tokenizer, AdmissionLanes* lanes,
                             ApiKeys* keys, RouterMetrics* metrics, OpenAiServiceOptions options)
    : router_(router),
      tokenizer_(tokenizer),
      lanes_(lanes),
      keys_(keys),
      metrics_(metrics),
      options_(std::move(options)),
      created_(absl::ToUnixSeconds(absl::Now())) {
  limits_.model_name = router->options().model_name;
  limits_.max_choices = options_.max_choices;
  limits_.max_stop_strings = router->options().max_stop_strings;
  limits_.max_top_logprobs = defaults::kMaxTopLogprobs;
}

absl::StatusOr<std::unique_ptr<OpenAiService>> OpenAiService::Create(
    Router* router, const Tokenizer& tokenizer, AdmissionLanes* lanes, ApiKeys* keys,
    RouterMetrics* metrics, OpenAiServiceOptions options) {
  if (options.max_choices < 1 || options.max_choices > 128) {
    return absl::InvalidArgumentError("--http_max_n must be in 1..128");
  }
  std::unique_ptr<OpenAiService> service(
      new OpenAiService(router, tokenizer, lanes, keys, metrics, options));
  // The chat templates: a model without one serves completions only.
  for (bool tools : {false, true}) {
    absl::StatusOr<std::string> source =
        jinja::LoadChatTemplate(options.model_dir, options.chat_template_file, tools);
    if (!source.ok()) {
      if (source.status().code() != absl::StatusCode::kNotFound) return source.status();
      service->no_template_ = absl::StrCat(
          "this model has no chat template: start the router with --chat_template=FILE (",
          source.status().message(), ")");
      continue;
    }
    absl::StatusOr<jinja::Template> parsed = jinja::Template::Parse(*source);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the chat template does not parse: ", parsed.status().message()));
    }
    (tools ? service->tool_template_ : service->chat_template_) = *std::move(parsed);
  }
  // The template's bos_token and eos_token, as transformers passes them.
  const std::string config_path = options.model_dir + "/tokenizer_config.json";
  std::error_code ec;
  if (!options.model_dir.empty() && std::filesystem::exists(config_path, ec)) {
    SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
    const Json config = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    service->bos_token_ = ConfigToken(config, "bos_token");
    service->eos_token_ = ConfigToken(config, "eos_token");
  }
  if (service->bos_token_.empty()) {
    if (auto id = tokenizer.model_bos_id(); id && tokenizer.TokenBytes(*id)) {
      service->bos_token_ = std::string(*tokenizer.TokenBytes(*id));
    }
  }
  if (service->eos_token_.empty()) {
    if (auto id = tokenizer.model_eos_id(); id && tokenizer.TokenBytes(*id)) {
      service->eos_token_ = std::string(*tokenizer.TokenBytes(*id));
    }
  }
  return service;
}

std::string OpenAiService::TokenText(int32_t id) const {
  const std::optional<std::string_view> bytes = tokenizer_.TokenBytes(id);
  return bytes ? std::string(*bytes) : std::string();
}

void OpenAiService::ReplyJson(HttpExchange& exchange, const char* endpoint, int status,
                              const std::string& body) {
  metrics_->HttpResponse(endpoint, status);
  exchange.Reply(status, "application/json", body);
}

void OpenAiService::ReplyError(HttpExchange& exchange, const char* endpoint, int status,
                               const std::string& message) {
  ReplyJson(exchange, endpoint, status, OpenAiErrorBody(status, message));
}

void OpenAiService::Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
  std::string path = request.target.substr(0, request.target.find('?'));
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const bool get = request.method == "GET", post = request.method == "POST";
  if (path == "/health") {
    if (!get) return ReplyError(*exchange, kHealth, 405, "use GET");
    const bool ready = router_->ready();
    return ReplyJson(*exchange, kHealth, ready ? 200 : 503,
                     ready ? R"({"status":"ok"})" : R"({"status":"not ready"})");
  }
  const char* label = path == "/v1/models"             ? kModels
                      : path == "/v1/completions"      ? kCompletions
                      : path == "/v1/chat/completions" ? kChat
                                                       : nullptr;
  if (label == nullptr) {
    return ReplyError(*exchange, "other", 404,
                      absl::StrCat("no route ", request.method, " ", path));
  }
  if (label == kModels ? !get : !post) {
    return ReplyError(*exchange, label, 405,
                      absl::StrCat("use ", label == kModels ? "GET" : "POST"));
  }
  std::string tenant;
  if (keys_ != nullptr) {
    absl::StatusOr<std::string> found = keys_->Authenticate(request.authorization);
    if (!found.ok()) {
      metrics_->AuthFailure();
      return ReplyError(*exchange, label, 401, std::string(found.status().message()));
    }
    tenant = *std::move(found);
  }
  if (label == kModels) {
    const v1::ModelInfo info = router_->ModelInfo();
    const Json models{{"object", "list"},
                      {"data", Json::array({Json{{"id", info.name()},
                                                 {"object", "model"},
                                                 {"created", created_},
                                                 {"owned_by", "shift"},
                                                 {"root", info.name()},
                                                 {"max_model_len", info.max_model_len()}}})}};
    return ReplyJson(*exchange, label, 200, models.dump());
  }
  const OpenAiEndpoint endpoint =
      label == kChat ? OpenAiEndpoint::kChat : OpenAiEndpoint::kCompletions;
  // Bounded per client like gRPC's: the tenant, else the peer's address.
  const std::string client = tenant.empty() ? request.peer : tenant;
  auto call = std::make_shared<OpenAiCall>(this, endpoint, exchange, tenant, client);
  const absl::Status queued =
      lanes_->For(static_cast<int64_t>(request.body.size()))
          ->Add(client, [call, body = std::move(request.body)] { call->Admit(body); });
  if (!queued.ok()) ReplyError(*exchange, label, 429, std::string(queued.message()));
}

}  // namespace shift
