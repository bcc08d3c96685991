#include "router/output_processor.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <utility>

#include "common/log.h"
#include "core/text_stream.h"

namespace shift {
namespace {

// The output threads' nice value (the step loops keep the process's).
constexpr int kOutputNice = 5;

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

}  // namespace

struct OutputProcessor::Stream {
  Stream(uint64_t id, StreamSpec spec, const Tokenizer& tokenizer)
      : id(id),
        spec(std::move(spec)),
        text(tokenizer, this->spec.stop_strings),
        group(this->spec.group),
        generation(this->spec.generation) {}

  const uint64_t id;
  const StreamSpec spec;
  // Set (under the processor's mu_) by Close; read by the delivering thread
  // under deliver_mu.
  std::atomic<bool> closed{false};

  // Guarded by the processor's mu_.
  std::deque<Item> pending;
  bool queued = false;  // in ready_ or being delivered
  // The request is paused while either holds: the sink said it is full, or
  // `pending` reached max_pending.
  bool sink_full = false;
  bool queue_full = false;
  bool stall_reported = false;
  absl::Time paused_since;
  bool paused() const { return sink_full || queue_full; }
  void SetFull(bool* which, absl::Time now) {
    if (!paused()) {
      paused_since = now;
      stall_reported = false;
    }
    *which = true;
  }

  // Held while delivering: Close takes it to wait for a delivery under way.
  absl::Mutex deliver_mu;
  TextStream text ABSL_GUARDED_BY(deliver_mu);
  bool finished ABSL_GUARDED_BY(deliver_mu) = false;
  uint32_t completion_tokens ABSL_GUARDED_BY(deliver_mu) = 0;
  absl::Time first_token ABSL_GUARDED_BY(deliver_mu) = absl::InfiniteFuture();
  absl::Time last_token ABSL_GUARDED_BY(deliver_mu) = absl::InfiniteFuture();
  // The group and generation of its latest step (a request can move group).
  uint32_t group ABSL_GUARDED_BY(deliver_mu);
  uint64_t generation ABSL_GUARDED_BY(deliver_mu);
};

OutputProcessor::OutputProcessor(const Tokenizer& tokenizer, RouterMetrics* metrics,
                                 const Clock* clock, OutputOptions options, Hooks hooks)
    : tokenizer_(tokenizer),
      metrics_(metrics),
      clock_(clock),
      options_(options),
      hooks_(std::move(hooks)) {
  const int threads = std::max(1, options_.threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this, i] {
      pthread_setname_np(pthread_self(), "shift-output");
      // Below the step loops: with cores to spare this changes nothing; on
      // a busy machine the next step is planned before output is streamed.
      setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kOutputNice);
      Work(/*watch_stalls=*/i == 0);
    });
  }
}

OutputProcessor::~OutputProcessor() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void OutputProcessor::Open(uint64_t id, StreamSpec spec) {
  auto stream = std::make_shared<Stream>(id, std::move(spec), tokenizer_);
  absl::MutexLock lock(&mu_);
  streams_[id] = std::move(stream);
}

bool OutputProcessor::Enqueue(Stream& s, Item item) {
  s.pending.push_back(std::move(item));
  if (s.queued) return false;
  s.queued = true;
  return true;
}

std::vector<uint64_t> OutputProcessor::Push(std::vector<RequestUpdate> updates, uint32_t group,
                                            uint64_t generation) {
  const absl::Time now = clock_->Now();
  std::vector<uint64_t> full;
  absl::MutexLock lock(&mu_);
  for (RequestUpdate& update : updates) {
    auto it = streams_.find(update.seq_id);
    if (it == streams_.end()) continue;
    Stream& s = *it->second;
    if (Enqueue(s, {std::move(update), now, absl::OkStatus(), group, generation})) {
      ready_.push_back(it->second);
    }
    if (!s.queue_full && static_cast<int64_t>(s.pending.size()) >= options_.max_pending) {
      s.SetFull(&s.queue_full, now);
      full.push_back(s.id);
    }
  }
  return full;
}

void OutputProcessor::Fail(uint64_t id, absl::Status status) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  if (Enqueue(*it->second, {RequestUpdate{}, clock_->Now(), std::move(status)})) {
    ready_.push_back(it->second);
  }
}

void OutputProcessor::Close(uint64_t id) {
  std::shared_ptr<Stream> s;
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    s = std::move(it->second);
    streams_.erase(it);
    s->closed = true;
    s->pending.clear();
  }
  // A delivery under way finishes before this returns; later ones see closed.
  absl::MutexLock wait(&s->deliver_mu);
  if (!s->finished) {
    Log(LogLevel::kInfo, "access", "request cancelled",
        {{"request_id", s->spec.request_id},
         {"group", s->group},
         {"generation", s->generation},
         {"status", "CANCELLED"},
         {"prompt_tokens", s->spec.prompt_tokens},
         {"generated_tokens", s->completion_tokens},
         {"e2e_s", absl::ToDoubleSeconds(clock_->Now() - s->spec.arrival)}});
  }
}

void OutputProcessor::Resumed(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->sink_full = false;
}

bool OutputProcessor::IsPaused(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(id);
  return it != streams_.end() && it->second->paused();
}

void OutputProcessor::Work(bool watch_stalls) {
  for (;;) {
    std::shared_ptr<Stream> s;
    std::vector<Item> items;
    std::vector<uint64_t> stalled;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !ready_.empty(); };
      if (watch_stalls) {
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
        const absl::Time now = clock_->Now();
        for (auto& [id, stream] : streams_) {
          if (stream->paused() && !stream->stall_reported &&
              now - stream->paused_since >= options_.stalled_stream_timeout) {
            stream->stall_reported = true;
            stalled.push_back(id);
          }
        }
      } else {
        mu_.Await(absl::Condition(&ready));
      }
      if (!ready_.empty()) {
        s = std::move(ready_.front());
        ready_.pop_front();
        items.assign(std::make_move_iterator(s->pending.begin()),
                     std::make_move_iterator(s->pending.end()));
        s->pending.clear();
      } else if (stopping_ && stalled.empty()) {
        return;
      }
    }
    for (uint64_t id : stalled) hooks_.stalled(id);
    if (s == nullptr) continue;

    Outcome outcome;
    {
      absl::MutexLock deliver(&s->deliver_mu);
      if (!s->closed) outcome = Deliver(*s, items);
    }
    if (outcome.full) {
      {
        absl::MutexLock lock(&mu_);
        s->SetFull(&s->sink_full, clock_->Now());
      }
      hooks_.full(s->id);
    }
    bool drained = false;
    {
      absl::MutexLock lock(&mu_);
      if (s->queue_full && !outcome.done &&
          static_cast<int64_t>(s->pending.size()) <= options_.max_pending / 2) {
        s->queue_full = false;
        drained = true;
      }
      if (outcome.done) {
        auto it = streams_.find(s->id);
        if (it != streams_.end() && it->second == s) streams_.erase(it);
        s->pending.clear();
      }
      if (!s->pending.empty()) {
        ready_.push_back(s);
      } else {
        s->queued = false;
      }
    }
    if (drained) hooks_.drained(s->id);
    if (outcome.done) hooks_.done(s->id, outcome.stopped);
  }
}

OutputProcessor::Outcome OutputProcessor::Deliver(Stream& s, std::vector<Item>& items) {
  Outcome outcome;
  for (Item& item : items) {
    if (s.finished) break;
    if (item.generation != 0) {
      s.group = item.group;
      s.generation = item.generation;
    }
    if (!item.error.ok()) {
      Log(LogLevel::kInfo, "access", "request failed",
          {{"request_id", s.spec.request_id},
           {"group", s.group},
           {"generation", s.generation},
           {"status", absl::StatusCodeToString(item.error.code())},
           {"reason", std::string(item.error.message())},
           {"prompt_tokens", s.spec.prompt_tokens},
           {"generated_tokens", s.completion_tokens},
           {"e2e_s", absl::ToDoubleSeconds(item.at - s.spec.arrival)}});
      s.spec.sink->OnError(item.error);
      s.finished = outcome.done = true;
      break;
    }
    const RequestUpdate& u = item.update;
    v1::GenerateDelta delta;
    FinishReason finish = u.finish;
    std::string stop_string;
    for (size_t i = 0; i < u.new_tokens.size(); ++i) {
      const int32_t token = u.new_tokens[i];
      if (s.completion_tokens++ == 0) {
        s.first_token = item.at;
        metrics_->FirstToken(s.group, absl::ToDoubleSeconds(item.at - s.spec.arrival),
                             absl::ToDoubleSeconds(u.first_scheduled - s.spec.arrival));
      } else {
        // Tokens of one step after its first arrive together (0 s apart).
        metrics_->InterTokenLatency(s.group, absl::ToDoubleSeconds(item.at - s.last_token));
      }
      s.last_token = item.at;
      delta.add_token_ids(token);
      if (s.spec.logprobs && i < u.new_logprobs.size()) {
        v1::TokenLogprob* lp = delta.add_logprobs();
        lp->set_token_id(token);
        lp->set_logprob(u.new_logprobs[i]);
        if (i < u.new_top_logprobs.size()) {
          for (const TokenLogprob& alt : u.new_top_logprobs[i]) {
            v1::TopLogprob* top = lp->add_top();
            top->set_token_id(alt.first);
            top->set_logprob(alt.second);
          }
        }
      }
      TextStream::Piece piece = s.text.Append(token);
      delta.mutable_text()->append(piece.text);
      if (piece.stopped) {
        // The scheduler does not know about stop strings: the router ends
        // the request when it hears of it.
        if (finish == FinishReason::kNone) outcome.stopped = true;
        finish = FinishReason::kStop;
        stop_string = piece.stop_string;
        break;
      }
    }
    if (finish == FinishReason::kNone) {
      if (delta.token_ids_size() > 0 && !s.spec.sink->OnDelta(std::move(delta))) {
        outcome.full = true;
      }
      continue;
    }
    if (stop_string.empty()) delta.mutable_text()->append(s.text.Finish());
    if (delta.token_ids_size() > 0 || !delta.text().empty()) s.spec.sink->OnDelta(std::move(delta));
    v1::GenerateFinal final;
    final.set_finish_reason(ToProto(finish));
    final.set_stop_string(stop_string);
    v1::Usage* usage = final.mutable_usage();
    usage->set_prompt_tokens(s.spec.prompt_tokens);
    usage->set_completion_tokens(s.completion_tokens);
    usage->set_cached_prompt_tokens(static_cast<uint32_t>(u.num_cached_tokens));
    usage->set_queue_time_seconds(absl::ToDoubleSeconds(u.first_scheduled - s.spec.arrival));
    usage->set_time_to_first_token_seconds(absl::ToDoubleSeconds(s.first_token - s.spec.arrival));
    const double e2e = absl::ToDoubleSeconds(item.at - s.spec.arrival);
    usage->set_e2e_seconds(e2e);
    final.set_request_id(s.spec.request_id);
    metrics_->RequestFinished(s.group, FinishReasonName(finish), e2e);
    Log(LogLevel::kInfo, "access", "request finished",
        {{"request_id", s.spec.request_id},
         {"group", s.group},
         {"generation", s.generation},
         {"status", "OK"},
         {"finish_reason", FinishReasonName(finish)},
         {"prompt_tokens", s.spec.prompt_tokens},
         {"cached_tokens", u.num_cached_tokens},
         {"generated_tokens", s.completion_tokens},
         {"queue_s", usage->queue_time_seconds()},
         {"ttft_s", s.completion_tokens > 0 ? usage->time_to_first_token_seconds() : -1.0},
         {"e2e_s", e2e},
         {"tp_steps", u.tp_steps},
         {"sp_steps", u.sp_steps}});
    if (s.completion_tokens > 0) {
      metrics_->RequestPhases(s.group, absl::ToDoubleSeconds(s.first_token - u.first_scheduled),
                              absl::ToDoubleSeconds(item.at - s.first_token), s.spec.prompt_tokens,
                              s.completion_tokens);
    }
    metrics_->OutputTokens(
        s.group, s.completion_tokens,
        s.completion_tokens > 1
            ? absl::ToDoubleSeconds(item.at - s.first_token) / (s.completion_tokens - 1)
            : -1);
    s.spec.sink->OnFinal(std::move(final));
    s.finished = outcome.done = true;
    break;
  }
  return outcome;
}

}  // namespace shift
