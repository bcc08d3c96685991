#include "core/scheduler.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {
namespace {

// Running and waiting queues keep arrival order (ties by id).
bool ArrivedBefore(const Request* a, const Request* b) {
  return a->arrival != b->arrival ? a->arrival < b->arrival : a->id < b->id;
}

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

Scheduler::Scheduler(SchedulerConfig config, const Clock* clock)
    : config_(config), clock_(clock), blocks_(config.num_blocks, config.block_size) {}

absl::Status Scheduler::AddRequest(std::unique_ptr<Request> request) {
  const int64_t prompt = static_cast<int64_t>(request->prompt.size());
  if (requests_.count(request->id)) {
    return absl::InvalidArgumentError(absl::StrCat("request ", request->id, " already exists"));
  }
  if (prompt == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (request->params.max_tokens < 1) {
    return absl::InvalidArgumentError("max_tokens must be at least 1");
  }
  const int64_t total = prompt + request->params.max_tokens;
  if (total > config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt (", prompt, " tokens) plus max_tokens (", request->params.max_tokens, ") is ",
        total, " tokens, over the maximum model length of ", config_.max_model_len));
  }
  // The last token generated is never computed into the cache.
  const int64_t blocks = (total - 1 + config_.block_size - 1) / config_.block_size;
  if (blocks > config_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt plus max_tokens needs ", blocks,
                                                   " KV blocks; the cache has only ",
                                                   config_.num_blocks));
  }
  Request* r = request.get();
  ToWaiting(r);
  requests_[r->id] = std::move(request);
  // Arrival order; a request arriving "earlier" than queued ones (a clock
  // set back by a simulator) still goes behind them: admission is FIFO.
  waiting_.push_back(r);
  arrived_.push_back(r->id);
  return absl::OkStatus();
}

void Scheduler::ToWaiting(Request* r) {
  r->state = Request::State::kWaiting;
  r->num_computed = 0;
  r->on_ranks = false;
  r->blocks_sent = 0;
  r->pending_steps.clear();
}

void Scheduler::Release(Request* r) {
  blocks_.Free(r->id);
  if (r->on_ranks) released_.push_back(r->id);
  r->on_ranks = false;
  r->blocks_sent = 0;
  r->num_computed = 0;
  // Tokens sampled in steps still in flight are dropped when they come.
  r->pending_steps.clear();
}

void Scheduler::Preempt(Request* r) {
  running_.erase(std::find(running_.begin(), running_.end(), r));
  Release(r);
  r->state = Request::State::kWaiting;
  ++r->num_preemptions;
  ++num_preemptions_;
  waiting_.push_front(r);
}

// Whether running request `r` decodes in the next step (one token left to
// plan), has a prefill chunk in it (more), or neither.
Scheduler::Part Scheduler::PartOf(const Request* r) const {
  const int64_t remaining = r->num_planned_tokens() - r->num_computed;
  // Its tokens in flight end it by length: nothing more to compute. And
  // never more than one step ahead: a pending input is always the token of
  // the step just before.
  if (remaining <= 0 || r->paused ||
      r->output.size() + r->pending_steps.size() >= r->params.max_tokens ||
      r->pending_steps.size() > 1) {
    return Part::kNone;
  }
  return remaining == 1 ? Part::kDecode : Part::kPrefill;
}

StepPreview Scheduler::Preview(double default_target, double ttft_target) const {
  StepPreview p;
  const absl::Time now = clock_->Now();
  for (const Request* r : running_) {
    if (PartOf(r) != Part::kDecode) continue;
    if (p.decodes.num_sequences >= config_.max_num_seqs) break;
    p.decodes.AddSequence(r->num_computed, 1);
    if (r->on_ranks) p.decodes.num_decodes += 1;
    const double own = r->params.tpot_target;
    const double target =
        own > 0 && (default_target <= 0 || own < default_target) ? own : default_target;
    if (target <= 0) continue;
    p.target = p.target > 0 ? std::min(p.target, target) : target;
    // A decode of a pending token gets its input when the step before ends,
    // which is when this one starts: it has waited nothing yet.
    double waited = 0;
    if (r->pending_steps.empty() && r->last_token != absl::InfiniteFuture()) {
      waited = absl::ToDoubleSeconds(now - r->last_token);
    }
    p.slack = std::min(p.slack, target - waited);
  }
  // With no target at all there is no budget to size.
  if (default_target <= 0 && p.target <= 0) return p;
  // Candidates past a full step cannot change its budget, unless they have
  // a time-to-first-token target, which the tokens queued before them count
  // against: then as many as kMaxPreviewedDeadlines, those past a full step
  // from their first token.
  int64_t tokens = p.decodes.num_tokens;
  int64_t sequences = p.decodes.num_sequences;
  auto full = [&] {
    return tokens >= config_.max_num_batched_tokens || sequences >= config_.max_num_seqs;
  };
  auto done = [&] {
    return ttft_target > 0 ? p.prefills.size() >= kMaxPreviewedDeadlines : full();
  };
  auto candidate = [&](const Request* r, int64_t start, int64_t n) {
    PrefillCandidate c{start, n};
    if (ttft_target > 0 && r->first_token == absl::InfiniteFuture()) {
      c.ttft_left = ttft_target - absl::ToDoubleSeconds(now - r->arrival);
    }
    p.prefills.push_back(c);
    tokens += n;
    sequences += 1;
  };
  for (const Request* r : running_) {
    if (done()) return p;
    if (PartOf(r) != Part::kPrefill) continue;
    candidate(r, r->num_computed, r->num_planned_tokens() - r->num_computed);
  }
  for (Request* r : waiting_) {
    if (done()) return p;
    if (r->paused) continue;
    // Where its admission would start: after its cached prefix (as Schedule
    // finds it now).
    int64_t start = 0;
    if (config_.enable_prefix_caching && !full()) {
      const int64_t blocks = (r->num_tokens() - 1) / config_.block_size;
      start = static_cast<int64_t>(blocks_
                                       .MatchPrefix(BlockHashes(r, blocks),
                                                    r->tokens(0, blocks * config_.block_size),
                                                    r->tenant)
                                       .size()) *
              config_.block_size;
    }
    candidate(r, start, r->num_tokens() - start);
  }
  return p;
}

SchedulerOutput Scheduler::Schedule(int64_t max_prefill_tokens) {
  SchedulerOutput out;
  const absl::Time now = clock_->Now();
  int64_t budget = config_.max_num_batched_tokens;
  // Prefill tokens left this step (the step budget's; the cap anyway).
  int64_t prefill_budget =
      max_prefill_tokens >= 0 ? max_prefill_tokens : std::numeric_limits<int64_t>::max();
  bool preempted = false;

  // Schedules `n` tokens of running request `r` (its blocks are allocated).
  auto add = [&](Request* r, int64_t n) {
    ScheduledSequence s;
    s.seq_id = r->id;
    s.is_new = !r->on_ranks;
    const std::vector<int32_t>& table = blocks_.Table(r->id);
    s.new_block_ids.assign(table.begin() + (s.is_new ? 0 : r->blocks_sent), table.end());
    r->on_ranks = true;
    r->blocks_sent = table.size();
    s.start_position = r->num_computed;
    s.token_ids.reserve(n);
    for (int64_t i = r->num_computed; i < r->num_computed + n; ++i) {
      s.token_ids.push_back(i < r->num_tokens() ? r->token(i) : kPendingToken);
    }
    r->num_computed += n;
    s.sample = r->num_computed == r->num_planned_tokens();
    if (s.sample) r->pending_steps.push_back(next_step_id_);
    s.request = r;
    if (r->first_scheduled == absl::InfiniteFuture()) r->first_scheduled = now;
    out.num_tokens += n;
    if (n == 1 && s.sample && !s.is_new) ++out.num_decodes;
    out.max_context = std::max(out.max_context, r->num_computed);
    out.attention += n * s.start_position + n * (n + 1) / 2;
    budget -= n;
    out.sequences.push_back(std::move(s));
  };
  // Takes a preempted request back out of this step if it was already in.
  auto unschedule = [&](const Request* victim) {
    auto it = std::find_if(out.sequences.begin(), out.sequences.end(),
                           [&](const ScheduledSequence& s) { return s.seq_id == victim->id; });
    if (it == out.sequences.end()) return;
    const int64_t n = static_cast<int64_t>(it->token_ids.size());
    budget += n;
    out.num_tokens -= n;
    out.attention -= n * it->start_position + n * (n + 1) / 2;
    if (n == 1 && it->sample && !it->is_new) --out.num_decodes;
    out.sequences.erase(it);
    out.max_context = 0;
    for (const ScheduledSequence& s : out.sequences) {
      out.max_context = std::max<int64_t>(
          out.max_context, s.start_position + static_cast<int64_t>(s.token_ids.size()));
    }
  };
  // Allocates blocks for `n` more tokens of running request i, preempting
  // the latest arrivals (even ones already in this step) while they run
  // short. False when `r` itself went.
  auto allocate = [&](size_t i, int64_t n) {
    Request* r = running_[i];
    while (!blocks_.Append(r->id, r->num_computed + n)) {
      Request* victim = running_.back();
      unschedule(victim);
      Preempt(victim);
      out.preempted.push_back(victim->id);
      preempted = true;
      if (victim == r) return false;
    }
    return true;
  };

  // Decodes first, then running prefills; both in arrival order.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < running_.size(); ++i) {
      Request* r = running_[i];
      if (PartOf(r) != (pass == 0 ? Part::kDecode : Part::kPrefill)) continue;
      const int64_t remaining = r->num_planned_tokens() - r->num_computed;
      if (budget <= 0 || static_cast<int64_t>(out.sequences.size()) >= config_.max_num_seqs) break;
      int64_t n = std::min(remaining, budget);
      if (pass == 1) {
        if (prefill_budget <= 0) break;
        n = std::min(n, prefill_budget);
        // A prefill chunk shrinks to the free blocks before anyone is
        // preempted for it, and then asks for one block at most.
        const int64_t covered =
            (static_cast<int64_t>(blocks_.Table(r->id).size()) + blocks_.num_free()) *
                config_.block_size -
            r->num_computed;
        n = covered > 0 ? std::min(n, covered) : std::min(n, config_.block_size);
      }
      if (!allocate(i, n)) break;
      add(r, n);
      if (pass == 1) prefill_budget -= n;
    }
  }

  // Admission, FIFO: only when the whole first chunk fits in free blocks (a
  // partial start would soon preempt itself), and never in a step that had
  // to preempt (the preempted would be re-admitted at once). A request
  // starts after the longest prefix of its full blocks already cached; at
  // least its last token is computed, for its logits.
  for (auto it = waiting_.begin();
       !preempted && it != waiting_.end() && budget > 0 && prefill_budget > 0 &&
       static_cast<int64_t>(out.sequences.size()) < config_.max_num_seqs;) {
    Request* r = *it;
    if (r->paused) {
      ++it;
      continue;
    }
    int64_t cached = 0;
    if (config_.enable_prefix_caching) {
      const int64_t full = (r->num_tokens() - 1) / config_.block_size;
      absl::Span<const uint64_t> hashes = BlockHashes(r, full);
      const std::vector<int32_t> blocks =
          blocks_.MatchPrefix(hashes, r->tokens(0, full * config_.block_size), r->tenant);
      blocks_.AppendCached(r->id, blocks);
      cached = static_cast<int64_t>(blocks.size());
    }
    const int64_t start = cached * config_.block_size;
    const int64_t n = std::min({r->num_tokens() - start, budget, prefill_budget});
    if (!blocks_.Append(r->id, start + n)) {
      blocks_.Free(r->id);
      break;
    }
    it = waiting_.erase(it);
    r->state = Request::State::kRunning;
    r->num_computed = start;
    r->num_cached_tokens = start;
    cached_tokens_ += start;
    if (config_.enable_prefix_caching) queried_tokens_ += r->num_tokens();
    running_.insert(std::upper_bound(running_.begin(), running_.end(), r, ArrivedBefore), r);
    add(r, n);
    prefill_budget -= n;
  }

  out.released_seq_ids = std::move(released_);
  released_.clear();
  out.arrived = std::move(arrived_);
  arrived_.clear();
  if (!out.sequences.empty()) out.step_id = next_step_id_++;
  return out;
}

absl::Span<const uint64_t> Scheduler::BlockHashes(Request* r, int64_t count) const {
  const int64_t bs = config_.block_size;
  while (static_cast<int64_t>(r->block_hashes.size()) < count) {
    const int64_t b = static_cast<int64_t>(r->block_hashes.size());
    std::vector<int32_t> tokens(bs);
    for (int64_t i = 0; i < bs; ++i) tokens[i] = r->token(b * bs + i);
    // The first block's hash starts from the tenant: tenants never look up
    // each other's blocks (and MatchPrefix checks the tenant anyway).
    const uint64_t previous = b == 0 ? absl::HashOf(r->tenant) : r->block_hashes[b - 1];
    r->block_hashes.push_back(absl::HashOf(previous, tokens));
  }
  return absl::MakeConstSpan(r->block_hashes).subspan(0, count);
}

std::vector<RequestUpdate> Scheduler::UpdateFromOutput(const SchedulerOutput& output,
                                                       absl::Span<const SampledToken> sampled,
                                                       StepMode mode) {
  std::vector<RequestUpdate> updates;
  // The step's KV is in the cache now: its full blocks can serve prefixes.
  if (config_.enable_prefix_caching) {
    for (const ScheduledSequence& s : output.sequences) {
      auto it = requests_.find(s.seq_id);
      if (it == requests_.end()) continue;
      Request* r = it->second.get();
      const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
      // Only blocks of known tokens: a block completed by a pending token is
      // registered with the step after, once the token is known.
      if (r->state != Request::State::kRunning || r->num_computed < end || end > r->num_tokens()) {
        continue;
      }
      const int64_t first = s.start_position / config_.block_size;
      const int64_t full = end / config_.block_size;
      absl::Span<const uint64_t> hashes = BlockHashes(r, full);
      for (int64_t b = first; b < full; ++b) {
        blocks_.Cache(r->id, b, hashes[b], r->tokens(b * config_.block_size, config_.block_size),
                      r->tenant);
      }
    }
  }
  const absl::Time now = clock_->Now();
  absl::flat_hash_set<uint64_t> sampling;
  sampling.reserve(output.sequences.size());
  for (const ScheduledSequence& s : output.sequences) {
    if (s.sample) sampling.insert(s.seq_id);
    auto it = requests_.find(s.seq_id);
    if (it == requests_.end()) continue;
    ++(mode == StepMode::kSequenceParallel ? it->second->sp_steps : it->second->tp_steps);
  }
  for (const SampledToken& t : sampled) {
    auto it = requests_.find(t.seq_id);
    if (it == requests_.end()) continue;  // finished (e.g. cancelled) meanwhile
    Request* r = it->second.get();
    if (!sampling.erase(t.seq_id) || r->state != Request::State::kRunning ||
        r->pending_steps.empty() || r->pending_steps.front() != output.step_id) {
      continue;
    }
    r->pending_steps.erase(r->pending_steps.begin());
    r->output.push_back(t.token_id);
    if (r->params.return_logprob) r->logprobs.push_back(t.logprob);
    if (r->first_token == absl::InfiniteFuture()) r->first_token = now;
    r->last_token = now;
    RequestUpdate update;
    update.seq_id = r->id;
    update.first_scheduled = r->first_scheduled;
    update.num_cached_tokens = r->num_cached_tokens;
    update.tp_steps = r->tp_steps;
    update.sp_steps = r->sp_steps;
    update.new_tokens.push_back(t.token_id);
    if (r->params.return_logprob) update.new_logprobs.push_back(t.logprob);
    if (r->params.top_logprobs > 0) update.new_top_logprobs.push_back(t.top);
    if (Contains(r->params.stop_token_ids, t.token_id)) {
      update.finish = FinishReason::kStop;
    } else if (!r->params.ignore_eos && Contains(r->params.eos_token_ids, t.token_id)) {
      update.finish = FinishReason::kEos;
    } else if (r->output.size() >= r->params.max_tokens) {
      update.finish = FinishReason::kLength;
    }
    if (update.finish != FinishReason::kNone) {
      r->finish = update.finish;
      running_.erase(std::find(running_.begin(), running_.end(), r));
      Release(r);
      r->state = Request::State::kFinished;
      requests_.erase(it);
    }
    updates.push_back(std::move(update));
  }
  return updates;
}

std::vector<RequestUpdate> Scheduler::FinishRequests(absl::Span<const uint64_t> ids,
                                                     FinishReason reason) {
  std::vector<RequestUpdate> updates;
  for (uint64_t id : ids) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    Request* r = it->second.get();
    if (r->state == Request::State::kWaiting) {
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), r));
    } else {
      running_.erase(std::find(running_.begin(), running_.end(), r));
    }
    Release(r);
    r->state = Request::State::kFinished;
    r->finish = reason;
    RequestUpdate update;
    update.seq_id = id;
    update.finish = reason;
    update.first_scheduled = r->first_scheduled;
    update.num_cached_tokens = r->num_cached_tokens;
    update.tp_steps = r->tp_steps;
    update.sp_steps = r->sp_steps;
    updates.push_back(std::move(update));
    requests_.erase(it);
  }
  return updates;
}

void Scheduler::RequeueAll() {
  // The ranks lost every sequence, so none needs releasing, and their KV
  // cache may be gone with a restarted rank: no cached block is trusted.
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    Request* r = *it;
    blocks_.Free(r->id);
    ToWaiting(r);
    waiting_.push_front(r);
  }
  running_.clear();
  released_.clear();
  blocks_.DropCache();
}

std::vector<std::unique_ptr<Request>> Scheduler::TakeAll() {
  RequeueAll();
  std::vector<std::unique_ptr<Request>> taken;
  for (Request* r : waiting_) {
    auto it = requests_.find(r->id);
    taken.push_back(std::move(it->second));
    requests_.erase(it);
  }
  waiting_.clear();
  released_.clear();
  arrived_.clear();
  std::stable_sort(taken.begin(), taken.end(),
                   [](const auto& a, const auto& b) { return ArrivedBefore(a.get(), b.get()); });
  return taken;
}

void Scheduler::Requeue(std::unique_ptr<Request> request) {
  Request* r = request.get();
  ToWaiting(r);
  arrived_.push_back(r->id);
  requests_[r->id] = std::move(request);
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), r, ArrivedBefore), r);
}

void Scheduler::SetPaused(uint64_t id, bool paused) {
  auto it = requests_.find(id);
  if (it != requests_.end()) it->second->paused = paused;
}

const Request* Scheduler::Find(uint64_t id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

absl::Status Scheduler::CheckConsistency() const {
  SHIFT_RETURN_IF_ERROR(blocks_.CheckConsistency());
  size_t seen = 0;
  for (const Request* r : waiting_) {
    ++seen;
    if (r->state != Request::State::kWaiting || !requests_.count(r->id)) {
      return absl::InternalError(absl::StrCat("request ", r->id, " is waiting in a wrong state"));
    }
    if (!blocks_.Table(r->id).empty() || r->num_computed != 0) {
      return absl::InternalError(absl::StrCat("waiting request ", r->id, " holds ",
                                              blocks_.Table(r->id).size(), " blocks"));
    }
  }
  absl::flat_hash_set<int32_t> held;  // shared prefix blocks count once
  for (size_t i = 0; i < running_.size(); ++i) {
    const Request* r = running_[i];
    ++seen;
    if (r->state != Request::State::kRunning || !requests_.count(r->id)) {
      return absl::InternalError(absl::StrCat("request ", r->id, " is running in a wrong state"));
    }
    if (i > 0 && ArrivedBefore(r, running_[i - 1])) {
      return absl::InternalError("running requests are out of arrival order");
    }
    if (r->pending_steps.size() > 2 || r->num_computed > r->num_planned_tokens()) {
      return absl::InternalError(absl::StrCat("request ", r->id, " computed ", r->num_computed,
                                              " of ", r->num_planned_tokens(), " tokens with ",
                                              r->pending_steps.size(), " pending"));
    }
    const int64_t blocks = static_cast<int64_t>(blocks_.Table(r->id).size());
    if (blocks * config_.block_size < r->num_computed) {
      return absl::InternalError(absl::StrCat("request ", r->id, " computed ", r->num_computed,
                                              " tokens into ", blocks, " blocks"));
    }
    const std::vector<int32_t>& table = blocks_.Table(r->id);
    held.insert(table.begin(), table.end());
  }
  if (seen != requests_.size()) {
    return absl::InternalError(
        absl::StrCat(requests_.size(), " requests but ", seen, " in the queues"));
  }
  if (static_cast<int64_t>(held.size()) != blocks_.num_used()) {
    return absl::InternalError(absl::StrCat("running requests hold ", held.size(), " blocks but ",
                                            blocks_.num_used(), " are in use"));
  }
  return absl::OkStatus();
}

}  // namespace shift
