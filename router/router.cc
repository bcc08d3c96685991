#include "router/router.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status.h"
#include "common/step_mode.h"
#include "common/unicode.h"
#include "core/group_choice.h"
#include "router/step_plan.h"

namespace shift {
namespace {

namespace rpc = v1::internal;

void Log(const std::string& what, std::initializer_list<LogField> fields = {},
         LogLevel level = LogLevel::kInfo) {
  shift::Log(level, "router", what, fields);
}

uint64_t RandomSeed() {
  static std::mt19937_64 rng{std::random_device{}()};
  static absl::Mutex mu;
  absl::MutexLock lock(&mu);
  return rng();
}

// config.json's EOS ids, then generation_config.json's that it lacks.
ModelConfig WithGenerationEos(ModelConfig config, const GenerationDefaults& generation) {
  for (const int64_t eos : generation.eos_token_ids) {
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), eos) ==
        config.eos_token_ids.end()) {
      config.eos_token_ids.push_back(eos);
    }
  }
  return config;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Router>> Router::Create(RouterOptions options,
                                                       const ModelConfig& config,
                                                       const Tokenizer& tokenizer, WorkerHub* hub,
                                                       RouterMetrics* metrics, const Clock* clock) {
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<ShiftPolicy> policy,
                         MakeShiftPolicy(options.shift_policy, options.shift_threshold));
  const SchedulerConfig& s = options.scheduler;
  if (s.max_num_batched_tokens < 1 || s.max_num_seqs < 1 || s.max_model_len < 2 ||
      s.block_size < 1 || options.max_queued_requests < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_num_batched_tokens (", s.max_num_batched_tokens, "), --max_num_seqs (",
        s.max_num_seqs, ") and --block_size (", s.block_size,
        ") must be positive, --max_model_len (", s.max_model_len,
        ") at least 2 and --max_queued_requests (", options.max_queued_requests, ") >= 0"));
  }
  if (s.max_model_len > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--max_model_len ", s.max_model_len,
                                                   " is over the model's context of ",
                                                   config.max_position_embeddings));
  }
  if (options.num_groups < 1 || options.world_size < 1) {
    return absl::InvalidArgumentError("--groups and --world_size must be at least 1");
  }
  if (static_cast<int>(options.num_groups) > metrics->num_groups()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the metrics were made for ", metrics->num_groups(), " groups, not ", options.num_groups));
  }
  for (const int64_t eos : options.generation.eos_token_ids) {
    if (eos >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("generation_config.json: field \"eos_token_id\" has ", eos,
                       ", not a token id of this model (0..", config.vocab_size - 1, ")"));
    }
  }
  if (options.sp_degree == 0) options.sp_degree = options.world_size;
  const GroupLayout layout{static_cast<int>(options.world_size),
                           static_cast<int>(options.sp_degree)};
  if (std::string why = layout.Problem(); !why.empty()) return absl::InvalidArgumentError(why);
  std::unique_ptr<StepTrace> step_trace;
  if (!options.step_trace.empty()) {
    SHIFT_ASSIGN_OR_RETURN(step_trace, StepTrace::Open(options.step_trace));
  }
  std::unique_ptr<Router> router(
      new Router(std::move(options), config, tokenizer, hub, metrics, clock, std::move(policy)));
  Router* r = router.get();
  r->output_ = std::make_unique<OutputProcessor>(
      tokenizer, metrics, clock, r->options_.output,
      OutputProcessor::Hooks{
          [r](uint64_t id, bool stopped) { r->OnStreamDone(id, stopped); },
          [r](uint64_t id) { r->OnStreamPause(id); },
          [r](uint64_t id) { r->OnStreamPause(id); },
          [r](uint64_t id) { r->OnStreamStalled(id); },
      });
  const std::string& policy_name = r->options_.shift_policy;
  metrics->SetServing(r->options_.model_name, policy_name,
                      policy_name == "tp"   ? std::numeric_limits<double>::infinity()
                      : policy_name == "sp" ? 0.0
                                            : static_cast<double>(r->options_.shift_threshold));
  metrics->SetLayout(layout.sp, layout.tp());
  for (uint32_t g = 0; g < r->options_.num_groups; ++g) metrics->GroupInService(g, false);
  absl::MutexLock lock(&router->mu_);
  router->step_trace_ = std::move(step_trace);
  for (uint32_t g = 0; g < router->options_.num_groups; ++g) {
    router->groups_.push_back(std::make_unique<Group>());
    Group* group = router->groups_.back().get();
    group->id = g;
    group->thread = std::thread([r = router.get(), group] {
      // Named for top -H and profilers.
      pthread_setname_np(pthread_self(), absl::StrCat("shift-steps-", group->id).c_str());
      r->Loop(group);
    });
  }
  return router;
}

Router::Router(RouterOptions options, const ModelConfig& config, const Tokenizer& tokenizer,
               WorkerHub* hub, RouterMetrics* metrics, const Clock* clock,
               std::unique_ptr<ShiftPolicy> policy)
    : options_(std::move(options)),
      config_(WithGenerationEos(config, options_.generation)),
      tokenizer_(tokenizer),
      hub_(hub),
      metrics_(metrics),
      clock_(clock),
      started_(clock->Now()),
      policy_(std::move(policy)) {
  int64_t longest = 1;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (const auto bytes = tokenizer.TokenBytes(id)) {
      longest = std::max<int64_t>(longest, static_cast<int64_t>(bytes->size()));
    }
  }
  max_prompt_bytes_ = options_.scheduler.max_model_len * longest;
}

Router::~Router() {
  Stop();
  // Delivers what Stop queued, then joins the output threads.
  output_.reset();
}

bool Router::Drain(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void Router::Stop() {
  std::vector<std::thread> loops;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& g : groups_) loops.push_back(std::move(g->thread));
  }
  for (std::thread& loop : loops) {
    if (loop.joinable()) loop.join();
  }
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> open;
  for (auto& [id, stream] : streams_) open.push_back(id);
  for (uint64_t id : open) Fail(id, absl::UnavailableError("the router is shutting down"));
}

bool Router::ready() {
  absl::MutexLock lock(&mu_);
  if (stopping_ || draining_) return false;
  for (const auto& g : groups_) {
    if (g->complete) return true;
  }
  return false;
}

bool Router::AwaitGroup(Group* g) {
  bool complete;
  {
    absl::MutexLock lock(&mu_);
    complete = g->complete;
  }
  if (complete) {
    // A rank lost while the group idles takes it out of service now, not at
    // its next step.
    const absl::Status members =
        hub_->WaitForGroup(g->id, options_.world_size, absl::ZeroDuration());
    // A re-formed generation whose communicators did not form takes the
    // group out of service too, until one forms.
    const absl::Status formed = hub_->FormationError(g->id);
    if (members.ok() && formed.ok()) return true;
    absl::MutexLock lock(&mu_);
    g->complete = false;
    metrics_->GroupInService(g->id, false);
    Evacuate(g, members.ok() ? std::string(formed.message())
                             : absl::StrCat("worker group ", g->id, " lost a rank"));
    return false;
  }
  if (!hub_->WaitForGroup(g->id, options_.world_size, absl::Milliseconds(200)).ok()) {
    return false;
  }
  // In service only once every rank's communicators formed.
  if (!hub_->WaitFormed(g->id, absl::Milliseconds(200)).ok()) return false;
  int64_t blocks = -1;
  for (uint32_t r = 0; r < options_.world_size; ++r) {
    auto reg = hub_->Registration(g->id, r);
    if (!reg.ok()) return false;
    if (reg->block_size() != options_.scheduler.block_size) {
      Log(absl::StrCat("group ", g->id, " rank ", r, " registered with block size ",
                       reg->block_size(), " (the router plans with ", options_.scheduler.block_size,
                       "); waiting for a matching rank"),
          {{"event", "rank_refused"}, {"group", g->id}, {"rank", r}}, LogLevel::kWarning);
      absl::SleepFor(absl::Seconds(1));
      return false;
    }
    blocks = blocks < 0 ? reg->kv_blocks() : std::min<int64_t>(blocks, reg->kv_blocks());
  }
  absl::MutexLock lock(&mu_);
  if (!g->scheduler) {
    SchedulerConfig config = options_.scheduler;
    config.num_blocks = blocks;
    g->scheduler = std::make_unique<Scheduler>(config, clock_);
    g->executor = std::make_unique<HubExecutor>(hub_, g->id, options_.step_timeout);
    g->loop = std::make_unique<StepLoop>(g->scheduler.get(), policy_.get(), g->executor.get(),
                                         clock_, step_trace_.get(), g->id);
    g->loop->set_tpot_target(options_.tpot_slo_ms / 1e3);
    g->loop->set_ttft_target(options_.ttft_slo_ms / 1e3);
    Log(absl::StrCat("group ", g->id, " ready: ", options_.world_size, " ranks, ", blocks,
                     " KV blocks of ", config.block_size, " tokens"),
        {{"event", "group_formed"},
         {"group", g->id},
         {"generation", hub_->Generation(g->id)},
         {"weights_digest", hub_->WeightsDigest(g->id)}});
  } else if (blocks < g->scheduler->config().num_blocks) {
    Log(absl::StrCat("group ", g->id, " re-formed with ", blocks, " KV blocks, fewer than the ",
                     g->scheduler->config().num_blocks,
                     " planned with; waiting for ranks with enough"),
        {{"group", g->id}, {"generation", hub_->Generation(g->id)}}, LogLevel::kWarning);
    absl::SleepFor(absl::Seconds(1));
    return false;
  } else {
    Log(absl::StrCat("group ", g->id, " is back in service (generation ", hub_->Generation(g->id),
                     ")"),
        {{"event", "group_reformed"}, {"group", g->id}, {"generation", hub_->Generation(g->id)}});
  }
  g->complete = true;
  metrics_->GroupInService(g->id, true);
  UpdateLoad(g);
  return true;
}

Router::Group* Router::PickGroup() {
  std::vector<GroupLoad> loads;
  loads.reserve(groups_.size());
  for (const auto& g : groups_) loads.push_back({g->complete && g->scheduler, g->outstanding});
  const int best = PickLeastLoaded(loads);
  return best < 0 ? nullptr : groups_[best].get();
}

void Router::Fail(uint64_t id, const absl::Status& status) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  metrics_->RequestFailed(status.code(), static_cast<int>(it->second.group));
  output_->Fail(id, status);
  Forget(id);
}

void Router::Forget(uint64_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  groups_[it->second.group]->outstanding -= it->second.work;
  streams_.erase(it);
}

void Router::Evacuate(Group* from, const std::string& why) {
  StreamOutput(from);  // tokens of its last step first
  std::vector<std::unique_ptr<Request>> moving = from->scheduler->TakeAll();
  int moved = 0, failed = 0;
  for (std::unique_ptr<Request>& r : moving) {
    auto it = streams_.find(r->id);
    if (it == streams_.end()) continue;
    Stream& stream = it->second;
    Group* to = PickGroup();
    if (to == nullptr || stream.requeues >= options_.max_requeues) {
      ++failed;
      Fail(r->id, absl::UnavailableError(absl::StrCat(
                      why, to == nullptr ? "; no other worker group is ready"
                                         : absl::StrCat("; moved ", stream.requeues,
                                                        " times already (--requeue_limit)"))));
      continue;
    }
    ++stream.requeues;
    from->outstanding -= stream.work;
    to->outstanding += stream.work;
    stream.group = to->id;
    to->scheduler->Requeue(std::move(r));
    ++moved;
    UpdateLoad(to);
  }
  if (moved + failed > 0) {
    Log(absl::StrCat("group ", from->id, " out of service: ", moved, " requests moved to other ",
                     "groups, ", failed, " failed"),
        {{"event", "group_out_of_service"}, {"group", from->id}, {"reason", why}},
        LogLevel::kWarning);
  }
  UpdateLoad(from);
}

absl::StatusOr<std::unique_ptr<Request>> Router::Validate(const v1::GenerateRequest& request) {
  // The cheap bounds first: nothing large is copied or tokenized before them.
  if (static_cast<int64_t>(request.request_id().size()) > defaults::kMaxRequestIdBytes ||
      FindInvalidUtf8(request.request_id()) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("request_id must be UTF-8 of at most ",
                                                   defaults::kMaxRequestIdBytes, " bytes"));
  }
  const v1::SamplingParams& s = request.sampling();
  if (s.stop_size() > options_.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.stop has ", s.stop_size(),
                                                   " strings, more than the ",
                                                   options_.max_stop_strings, " allowed"));
  }
  int64_t stop_bytes = 0;
  for (const std::string& stop : s.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("sampling.stop has an empty string");
    if (const size_t bad = FindInvalidUtf8(stop); bad != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling.stop is not valid UTF-8 at byte ", bad));
    }
    stop_bytes += static_cast<int64_t>(stop.size());
  }
  if (stop_bytes > options_.max_stop_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.stop has ", stop_bytes,
                                                   " bytes, more than the ",
                                                   options_.max_stop_bytes, " allowed"));
  }
  if (s.stop_token_ids_size() > defaults::kMaxStopTokenIds) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.stop_token_ids has more than ", defaults::kMaxStopTokenIds, " ids"));
  }
  SHIFT_RETURN_IF_ERROR(ValidateLatencyTarget(request.tpot_slo_ms(), "tpot_slo_ms"));
  if (request.has_token_ids() &&
      request.token_ids().ids_size() > options_.scheduler.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", request.token_ids().ids_size(),
                     " tokens, over --max_model_len (", options_.scheduler.max_model_len, ")"));
  }
  auto r = std::make_unique<Request>();
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      SHIFT_ASSIGN_OR_RETURN(r->prompt, EncodePrompt(request.text(), request.parse_special(),
                                                     !request.has_add_special_tokens() ||
                                                         request.add_special_tokens()));
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      r->prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    default:
      break;
  }
  if (r->prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (size_t i = 0; i < r->prompt.size(); ++i) {
    if (r->prompt[i] < 0 || r->prompt[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " is ", r->prompt[i],
                                                     ", not an id of this model (0..",
                                                     config_.vocab_size - 1, ")"));
    }
  }
  RequestParams& p = r->params;
  if (s.max_tokens() < 1)
    return absl::InvalidArgumentError("sampling.max_tokens must be at least 1");
  if (!std::isfinite(s.temperature()) || s.temperature() < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.temperature must be >= 0, got %.9g", s.temperature()));
  }
  if (!std::isfinite(s.top_p()) || s.top_p() < 0 || s.top_p() > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.top_p must be in (0, 1] (0 means 1), got %.9g", s.top_p()));
  }
  if (s.top_logprobs() > defaults::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_logprobs is at most ",
                                                   defaults::kMaxTopLogprobs, ", got ",
                                                   s.top_logprobs()));
  }
  for (int32_t id : s.stop_token_ids()) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling.stop_token_ids has ", id, ", not an id of this model"));
    }
  }
  p.max_tokens = s.max_tokens();
  // Unset fields take the model's defaults (generation_config.json).
  const GenerationDefaults& model = options_.generation;
  p.temperature = s.has_temperature() ? s.temperature() : model.temperature.value_or(0.0f);
  const float top_p = s.has_top_p() ? s.top_p() : model.top_p.value_or(1.0f);
  p.top_p = top_p == 0 ? 1.0f : top_p;
  p.top_k = s.has_top_k() ? static_cast<int32_t>(std::min<uint32_t>(s.top_k(), 1u << 30))
                          : model.top_k.value_or(0);
  p.seed = s.has_seed() ? s.seed() : RandomSeed();
  p.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  for (int64_t eos : config_.eos_token_ids) p.eos_token_ids.push_back(static_cast<int32_t>(eos));
  p.ignore_eos = s.ignore_eos();
  p.top_logprobs = s.top_logprobs();
  p.return_logprob = s.return_logprob() || s.top_logprobs() > 0;
  p.tpot_target = request.tpot_slo_ms() / 1e3;
  return r;
}

absl::StatusOr<std::vector<int32_t>> Router::EncodePrompt(const std::string& text,
                                                          bool parse_special,
                                                          bool add_special_tokens) const {
  // Refused by its length before the slow part, tokenizing: no token is
  // longer than the vocabulary's longest, so more bytes than that many
  // tokens of it cannot fit in --max_model_len.
  if (static_cast<int64_t>(text.size()) > max_prompt_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", text.size(), " bytes, more than ", max_prompt_bytes_,
                     " (--max_model_len ", options_.scheduler.max_model_len, " tokens of at most ",
                     max_prompt_bytes_ / options_.scheduler.max_model_len, " bytes)"));
  }
  auto ids = tokenizer_.EncodePrompt(text, parse_special, add_special_tokens);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt text: ", ids.status().message()));
  }
  return ids;
}

absl::StatusOr<uint64_t> Router::Submit(const v1::GenerateRequest& request, RequestSink* sink,
                                        const std::string& tenant) {
  auto submitted = [&]() -> absl::StatusOr<uint64_t> {
    SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Request> r, Validate(request));
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the router is shutting down");
    if (draining_) return absl::UnavailableError("the router is draining; retry on another");
    Group* g = PickGroup();
    if (g == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("no worker group is ready (each of the ", options_.num_groups,
                       " group(s) needs ", options_.world_size, " ranks registered and formed)"));
    }
    int64_t waiting = 0;
    for (const auto& group : groups_) {
      if (group->scheduler) waiting += group->scheduler->num_waiting();
    }
    if (waiting >= options_.max_queued_requests) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the queue is full (", options_.max_queued_requests, " requests waiting); retry later"));
    }
    const uint64_t id = next_id_++;
    r->id = id;
    if (!tenant.empty()) {
      r->tenant = tenants_.try_emplace(tenant, tenants_.size() + 1).first->second;
    }
    r->arrival = clock_->Now();
    Stream stream;
    stream.group = g->id;
    stream.work = RequestWork(*r);
    OutputProcessor::StreamSpec spec;
    spec.sink = sink;
    spec.arrival = r->arrival;
    spec.prompt_tokens = static_cast<uint32_t>(r->prompt.size());
    spec.request_id = RequestId(request, id);
    r->request_id = spec.request_id;
    spec.group = g->id;
    spec.generation = hub_->Generation(g->id);
    spec.logprobs = r->params.return_logprob;
    spec.stop_strings.assign(request.sampling().stop().begin(), request.sampling().stop().end());
    SHIFT_RETURN_IF_ERROR(g->scheduler->AddRequest(std::move(r)));
    metrics_->PromptTokens(g->id, spec.prompt_tokens);
    output_->Open(id, std::move(spec));
    g->outstanding += stream.work;
    streams_.emplace(id, std::move(stream));
    UpdateLoad(g);
    return id;
  }();
  if (!submitted.ok()) {
    metrics_->RequestFailed(submitted.status().code());
    LogRefusal(request.request_id(), submitted.status());
  }
  return submitted;
}

void Router::LogRefusal(const std::string& request_id, const absl::Status& status) {
  // At most 20 lines a second: a flood of bad requests cannot flood the log
  // (the next line says how many were left out).
  int64_t left_out = 0;
  {
    absl::MutexLock lock(&refusals_mu_);
    const absl::Time now = absl::Now();
    if (now - refusals_window_ >= absl::Seconds(1)) {
      refusals_window_ = now;
      refusals_in_window_ = 0;
    }
    if (++refusals_in_window_ > 20) {
      ++refusals_left_out_;
      return;
    }
    left_out = std::exchange(refusals_left_out_, 0);
  }
  Log("request refused", {{"event", "request_refused"},
                          {"request_id", request_id},
                          {"code", absl::StatusCodeToString(status.code())},
                          {"reason", std::string(status.message())},
                          {"refusals_not_logged", left_out}});
}

void Router::Cancel(uint64_t id, absl::StatusCode code) {
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(id);
    if (it != streams_.end()) {
      Group* g = groups_[it->second.group].get();
      if (g->scheduler) g->scheduler->FinishRequests({id}, FinishReason::kCancelled);
      metrics_->RequestFailed(code, static_cast<int>(g->id));
      Forget(id);
      UpdateLoad(g);
    }
  }
  // Not under mu_: waits for a delivery under way, whose thread may be
  // about to call back into the router.
  output_->Close(id);
}

Router::Group* Router::GroupOf(uint64_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return nullptr;
  Group* g = groups_[it->second.group].get();
  return g->scheduler ? g : nullptr;
}

void Router::FollowPause(uint64_t id) {
  // The scheduler's pause follows the output side's, whichever call comes
  // last: a full sink, a drained queue and a Resume may race.
  if (Group* g = GroupOf(id)) g->scheduler->SetPaused(id, output_->IsPaused(id));
}

void Router::Resume(uint64_t id) {
  absl::MutexLock lock(&mu_);
  output_->Resumed(id);
  FollowPause(id);
}

void Router::OnStreamPause(uint64_t id) {
  absl::MutexLock lock(&mu_);
  FollowPause(id);
}

void Router::OnStreamStalled(uint64_t id) {
  absl::MutexLock lock(&mu_);
  Group* g = GroupOf(id);
  if (g == nullptr) return;
  g->scheduler->FinishRequests({id}, FinishReason::kCancelled);
  Fail(id, absl::ResourceExhaustedError(
               absl::StrCat("the client did not read its stream for ",
                            absl::FormatDuration(options_.output.stalled_stream_timeout),
                            "; the request was ended to free its KV cache")));
  UpdateLoad(g);
}

void Router::OnStreamDone(uint64_t id, bool stopped) {
  absl::MutexLock lock(&mu_);
  Group* g = GroupOf(id);
  if (g == nullptr) return;
  // A stop string matched: the scheduler, which knows only token ids, ends
  // the request now.
  if (stopped) g->scheduler->FinishRequests({id}, FinishReason::kStop);
  Forget(id);
  UpdateLoad(g);
}

void Router::UpdateLoad(const Group* g) {
  if (!g->scheduler) return;
  metrics_->SetLoad(g->id, static_cast<double>(g->scheduler->num_waiting()),
                    static_cast<double>(g->scheduler->num_running()),
                    static_cast<double>(g->scheduler->blocks().num_used()),
                    static_cast<double>(g->scheduler->blocks().num_blocks()),
                    static_cast<double>(g->scheduler->blocks().num_cached()));
}

std::optional<PlannedStep> Router::PlanStep(Group* g, const PlannedStep* running) {
  std::optional<PlannedStep> step =
      running != nullptr ? g->loop->PlanAhead(*running) : g->loop->Plan();
  const int64_t cached = g->scheduler->cached_tokens();
  metrics_->PrefixCacheHits(g->id, static_cast<double>(cached - g->cached_tokens));
  g->cached_tokens = cached;
  const int64_t queried = g->scheduler->queried_tokens();
  metrics_->PrefixCacheQueries(g->id, static_cast<double>(queried - g->queried_tokens));
  g->queried_tokens = queried;
  if (step && !step->output.preempted.empty()) {
    metrics_->Preemptions(g->id, static_cast<double>(step->output.preempted.size()));
  }
  return step;
}

void Router::StepFailed(Group* g, const absl::Status& status, int64_t running) {
  StreamOutput(g);
  if (absl::IsUnavailable(status)) {
    // Out of service until the group re-forms: its requests move on.
    g->complete = false;
    metrics_->GroupInService(g->id, false);
    Evacuate(g, absl::StrCat("worker group ", g->id, " failed: ", status.message()));
  } else {
    Log(absl::StrCat(status.message(), "; ", running, " running requests re-queued while group ",
                     g->id, " re-forms"),
        {{"event", "rank_lost"}, {"group", g->id}, {"generation", hub_->Generation(g->id)}},
        LogLevel::kWarning);
  }
  UpdateLoad(g);
}

void Router::Loop(Group* g) {
  // With async_scheduling: the step planned ahead and started, not yet
  // finished.
  std::optional<PlannedStep> in_flight;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        if (in_flight) g->loop->Abandon();
        StreamOutput(g);
        return;
      }
    }
    std::optional<PlannedStep> step = std::move(in_flight);
    in_flight.reset();
    absl::Status started = absl::OkStatus();
    if (!step) {
      if (!AwaitGroup(g)) continue;
      {
        absl::MutexLock lock(&mu_);
        if (!g->scheduler->HasWork()) {
          g->loop->Idle();  // the wait is not step overhead
          StreamOutput(g);
          auto wake = [this, g]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || g->scheduler->HasWork();
          };
          mu_.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(100));
          if (stopping_) return;
          if (!g->scheduler->HasWork()) continue;
        }
        step = PlanStep(g);
        // The last step's tokens go out now, while this one runs.
        StreamOutput(g);
        if (!step) {
          // Nothing fits this instant (or every request is paused).
          UpdateLoad(g);
          auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
          mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Milliseconds(1));
          continue;
        }
      }
      started = g->loop->Start(*step);
    }
    // The next step, planned and sent while this one runs.
    std::optional<PlannedStep> ahead;
    absl::Status ahead_started = absl::OkStatus();
    if (options_.async_scheduling && started.ok()) {
      {
        absl::MutexLock lock(&mu_);
        ahead = PlanStep(g, &*step);
        StreamOutput(g);
      }
      if (ahead) ahead_started = g->loop->Start(*ahead);
    }
    absl::StatusOr<ExecutedStep> executed =
        started.ok() ? g->loop->Wait() : absl::StatusOr<ExecutedStep>(started);

    absl::MutexLock lock(&mu_);
    int64_t running = g->scheduler->num_running();
    absl::StatusOr<StepRecord> record = g->loop->Finish(*step, std::move(executed));
    if (!record.ok()) {
      if (ahead) g->loop->Abandon();  // void with the failed step
      StepFailed(g, record.status(), running);
      continue;
    }
    Record(g, *step, *std::move(record));
    UpdateLoad(g);
    if (!ahead) continue;
    if (!ahead_started.ok()) {
      running = g->scheduler->num_running();
      StepFailed(g, g->loop->Finish(*ahead, ahead_started).status(), running);
      continue;
    }
    in_flight = std::move(ahead);
  }
}

void Router::StreamOutput(Group* g) {
  if (g->unstreamed.empty()) return;
  // A stream whose output waits undelivered pauses its request.
  for (uint64_t id : output_->Push(std::move(g->unstreamed), g->id, hub_->Generation(g->id))) {
    g->scheduler->SetPaused(id, true);
  }
  g->unstreamed.clear();
}

void Router::Record(Group* g, const PlannedStep& step, StepRecord record) {
  const StepMode mode = record.decision.mode;
  const bool switched = g->last_mode && *g->last_mode != mode;
  g->last_mode = mode;
  if (mode == StepMode::kSequenceParallel) {
    g->modes.set_sp_steps(g->modes.sp_steps() + 1);
  } else {
    g->modes.set_tp_steps(g->modes.tp_steps() + 1);
  }
  if (switched) g->modes.set_switches(g->modes.switches() + 1);
  metrics_->Step(g->id, mode, switched, static_cast<double>(step.output.num_tokens),
                 record.seconds());
  if (record.overhead_seconds >= 0) metrics_->RouterOverhead(g->id, record.overhead_seconds);
  if (step.budget) {
    metrics_->StepBudget(g->id, BudgetReasonName(step.budget->reason),
                         static_cast<double>(step.budget->prefill_tokens));
    if (step.budget->reason == BudgetReason::kTargetUnmet && !g->target_unmet_logged) {
      g->target_unmet_logged = true;
      Log(absl::StrFormat("group %u: its decodes alone are predicted at %.3f ms a step, over "
                          "the target of %g ms (--tpot_slo_ms=%g, or a request's tpot_slo_ms); "
                          "such steps run their decodes alone (counted in "
                          "shift_step_budget_total{reason=\"target_unmet\"})",
                          g->id, 1e3 * step.budget->predicted_seconds,
                          1e3 * step.budget->target_seconds, options_.tpot_slo_ms),
          {{"event", "tpot_target_unmet"}, {"group", g->id}}, LogLevel::kWarning);
    }
  }
  if (record.decision.predicted_seconds >= 0) {
    metrics_->CostPrediction(g->id, record.decision.predicted_seconds, record.seconds());
  }
  // Streamed once the next step is planned (StreamOutput), so that the output
  // threads do not compete with planning it.
  for (RequestUpdate& update : record.updates) g->unstreamed.push_back(std::move(update));
}

v1::ModelInfo Router::ModelInfo() const {
  v1::ModelInfo info;
  info.set_name(options_.model_name);
  info.set_architecture(config_.architecture);
  info.set_vocab_size(static_cast<uint32_t>(config_.vocab_size));
  info.set_max_model_len(static_cast<uint32_t>(options_.scheduler.max_model_len));
  info.set_num_layers(static_cast<uint32_t>(config_.num_hidden_layers));
  info.set_hidden_size(static_cast<uint32_t>(config_.hidden_size));
  info.set_num_heads(static_cast<uint32_t>(config_.num_attention_heads));
  info.set_num_kv_heads(static_cast<uint32_t>(config_.num_key_value_heads));
  info.set_head_dim(static_cast<uint32_t>(config_.head_dim));
  for (int64_t eos : config_.eos_token_ids) info.add_eos_token_ids(static_cast<int32_t>(eos));
  info.set_world_size(options_.world_size);
  info.set_sp_degree(options_.sp_degree);
  info.set_num_groups(options_.num_groups);
  info.set_shift_policy(options_.shift_policy);
  const GenerationDefaults& model = options_.generation;
  if (model.temperature) info.set_default_temperature(*model.temperature);
  if (model.top_p) info.set_default_top_p(*model.top_p);
  if (model.top_k) info.set_default_top_k(static_cast<uint32_t>(*model.top_k));
  info.set_tokenizer(std::string(tokenizer_.kind()));
  for (const int32_t id : tokenizer_.prompt_template().prefix) info.add_prompt_prefix_ids(id);
  for (const int32_t id : tokenizer_.prompt_template().suffix) info.add_prompt_suffix_ids(id);
  return info;
}

v1::ServerStatus Router::Status() {
  v1::ServerStatus status;
  struct Ranks {
    uint64_t generation;
    std::vector<absl::StatusOr<rpc::Register>> regs;
    std::vector<uint32_t> connected;
  };
  std::vector<Ranks> ranks(options_.num_groups);
  for (uint32_t g = 0; g < options_.num_groups; ++g) {
    ranks[g].generation = hub_->Generation(g);
    for (uint32_t r = 0; r < options_.world_size; ++r) {
      ranks[g].regs.push_back(hub_->Registration(g, r));
    }
    ranks[g].connected = hub_->ConnectedRanks(g);
  }
  absl::MutexLock lock(&mu_);
  uint32_t queued = 0;
  v1::ModeCounters total;
  for (const auto& g : groups_) {
    const Ranks& info = ranks[g->id];
    v1::GroupStatus* group = status.add_groups();
    group->set_group(g->id);
    group->set_generation(info.generation);
    group->set_ready(g->complete);
    for (uint32_t r = 0; r < options_.world_size; ++r) {
      v1::RankStatus* rank = group->add_ranks();
      rank->set_rank(r);
      rank->set_connected(std::find(info.connected.begin(), info.connected.end(), r) !=
                          info.connected.end());
      if (info.regs[r].ok()) {
        rank->set_address(info.regs[r]->address());
        rank->set_kv_blocks(info.regs[r]->kv_blocks());
        rank->set_weight_bytes(info.regs[r]->weight_bytes());
        rank->set_metrics_address(info.regs[r]->metrics_address());
      }
    }
    if (g->scheduler) {
      group->set_kv_blocks_total(static_cast<uint32_t>(g->scheduler->blocks().num_blocks()));
      group->set_kv_blocks_used(static_cast<uint32_t>(g->scheduler->blocks().num_used()));
      group->set_running_sequences(static_cast<uint32_t>(g->scheduler->num_running()));
      queued += static_cast<uint32_t>(g->scheduler->num_waiting());
    }
    *group->mutable_modes() = g->modes;
    group->set_last_mode(g->last_mode ? ToProto(*g->last_mode) : v1::MODE_UNSPECIFIED);
    total.set_tp_steps(total.tp_steps() + g->modes.tp_steps());
    total.set_sp_steps(total.sp_steps() + g->modes.sp_steps());
    total.set_switches(total.switches() + g->modes.switches());
  }
  status.set_queued_requests(queued);
  *status.mutable_modes() = total;
  status.set_draining(draining_ || stopping_);
  status.set_uptime_seconds(absl::ToDoubleSeconds(clock_->Now() - started_));
  return status;
}

}  // namespace shift
