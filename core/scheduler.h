// The router's scheduler: continuous batching over one worker group's KV
// blocks, with prefix caching: an admitted request starts from the longest
// run of its full blocks already cached, so only the rest is computed.
// Each Schedule() builds one step: every running decode first (one token
// each), then prefill chunks (running partial prefills, then waiting
// requests in arrival order) within --max-num-batched-tokens and
// --max-num-seqs. When blocks run out, the most recently arrived running
// sequence is preempted by recompute: its blocks are freed, the ranks are
// told to drop it, and it waits at the head of the queue to recompute its
// prompt and output so far. A pure function of its state, the step results
// it is given and the injected clock: no gRPC, no threads, no locks (the
// caller serialises calls).
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/defaults.h"
#include "common/step_mode.h"
#include "core/block_manager.h"
#include "core/clock.h"
#include "core/request.h"
#include "core/shift_policy.h"
#include "core/step_budget.h"

namespace shift {

// A decode's input token that the router does not know yet: the token its
// sequence samples in the step before (planned ahead of that step's
// results). The ranks resolve it from the leader's sampled tokens.
inline constexpr int32_t kPendingToken = -1;

struct SchedulerConfig {
  // Tokens per step, all sequences.
  int64_t max_num_batched_tokens = defaults::kMaxNumBatchedTokens;
  int64_t max_num_seqs = defaults::kMaxNumSeqs;    // sequences per step
  int64_t max_model_len = defaults::kMaxModelLen;  // prompt + max_tokens per request
  int64_t num_blocks = 0;                          // KV blocks of the group
  int64_t block_size = defaults::kBlockSize;       // tokens per block
  // Reuse the KV of full blocks shared with earlier sequences' prefixes.
  bool enable_prefix_caching = true;
};

// One sequence's part of a step, as the ranks will get it.
struct ScheduledSequence {
  uint64_t seq_id = 0;
  // First time the ranks see the sequence (or again after a preemption or a
  // group re-forming): new_block_ids is then its whole table, and the
  // request's sampling parameters go with it.
  bool is_new = false;
  std::vector<int32_t> token_ids;  // tokens whose KV this step computes (or kPendingToken)
  int64_t start_position = 0;      // position of token_ids[0]
  std::vector<int32_t> new_block_ids;
  bool sample = false;               // the step ends at the sequence's last token
  const Request* request = nullptr;  // valid until the next call that changes state
};

struct SchedulerOutput {
  uint64_t step_id = 0;  // 0: nothing to run
  // Decodes first, then prefill chunks.
  std::vector<ScheduledSequence> sequences;
  // Sequences the ranks must forget before this step: finished, cancelled or
  // preempted since the last step.
  std::vector<uint64_t> released_seq_ids;
  int64_t num_tokens = 0;
  int64_t num_decodes = 0;  // sequences with one token and a sample
  int64_t max_context = 0;  // start_position + tokens, the largest
  int64_t attention = 0;    // positions attended, all tokens (each attends 0..itself)
  // Sequences preempted while building this step.
  std::vector<uint64_t> preempted;
  // Requests queued (AddRequest or Requeue) since the last Schedule.
  std::vector<uint64_t> arrived;
  // Set by the step loop: this step was planned straight after the previous
  // one ended, with no wait for work between (the ranks' gap before it is
  // the loop's turn-around, not idleness).
  bool follows_previous = false;
  bool empty() const { return sequences.empty(); }
};

// What the next Schedule() would hold before any prefill (its decodes),
// what prefill may follow (running prefills, then waiting requests from
// after their cached prefix, in the order Schedule takes them, as many as
// could fit in a step), and how long its decodes can still wait: what a
// step's budget is sized from (core/step_budget.h). Preemption aside.
struct StepPreview {
  StepShape decodes;
  std::vector<PrefillCandidate> prefills;
  // Over the decodes with a time-per-output-token target (theirs or the
  // default given to Preview, the tighter): the least of the target less the
  // time since the decode's last token, and the tightest target. Infinite
  // and 0 when no decode has one (and then, with no default either, no
  // prefill is previewed).
  double slack = std::numeric_limits<double>::infinity();  // seconds
  double target = 0;                                       // seconds
};

// A token id with its log-probability: a sampled token's alternatives.
using TokenLogprob = std::pair<int32_t, float>;

// The leader's answer for one sequence of a step.
struct SampledToken {
  uint64_t seq_id = 0;
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;  // the request's top_logprobs alternatives, best first
};

// What a step (or a FinishRequests call) did to one request.
struct RequestUpdate {
  uint64_t seq_id = 0;
  std::vector<int32_t> new_tokens;                          // at most one per step
  std::vector<float> new_logprobs;                          // with return_logprob
  std::vector<std::vector<TokenLogprob>> new_top_logprobs;  // with top_logprobs, per new token
  FinishReason finish = FinishReason::kNone;                // set when the request ended
  // When the request was first scheduled and how many of its prompt tokens
  // came from the prefix cache (for its usage report).
  absl::Time first_scheduled = absl::InfiniteFuture();
  int64_t num_cached_tokens = 0;
  // Steps the request had tokens in so far, by mode.
  int32_t tp_steps = 0;
  int32_t sp_steps = 0;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, const Clock* clock);

  const SchedulerConfig& config() const { return config_; }
  // Queues a request (id unique, prompt non-empty, prompt + max_tokens within
  // max_model_len and within the whole KV cache); INVALID_ARGUMENT otherwise.
  absl::Status AddRequest(std::unique_ptr<Request> request);
  // Builds the next step. An empty output (step_id 0) means nothing can run,
  // though released_seq_ids may still need sending. It may be called before
  // the previous step's results are in (planning ahead, at most one step):
  // a sequence that samples in that step then decodes its pending token
  // (kPendingToken), one whose pending tokens reach max_tokens is left out,
  // and one that turns out to have finished in that step computes one token
  // too many, never delivered, and is released in the step after.
  // With `max_prefill_tokens` >= 0, prefill chunks take at most that many
  // tokens of the step (decodes are never cut).
  SchedulerOutput Schedule(int64_t max_prefill_tokens = -1);
  // `default_target`: the time-per-output-token target (seconds) of decodes
  // that have none of their own (0: none); `ttft_target`: the
  // time-to-first-token target (seconds; 0: none) each prefill candidate's
  // ttft_left counts down from.
  StepPreview Preview(double default_target = 0, double ttft_target = 0) const;
  static constexpr size_t kMaxPreviewedDeadlines = 4096;
  // Applies the leader's sampled tokens for `output` (one per sequence with
  // `sample`), steps in the order they were scheduled; returns one update
  // per sequence that got a token or finished. A token for a sequence that
  // no longer waits for it (finished, cancelled or preempted since) is
  // dropped.
  // Finished requests free their blocks and are removed. `mode`: the mode the
  // step ran in, counted per request.
  std::vector<RequestUpdate> UpdateFromOutput(const SchedulerOutput& output,
                                              absl::Span<const SampledToken> sampled,
                                              StepMode mode = StepMode::kTensorParallel);
  // Ends requests wherever they are (waiting or running); unknown ids are
  // ignored. Their blocks are free when this returns.
  std::vector<RequestUpdate> FinishRequests(absl::Span<const uint64_t> ids, FinishReason reason);
  // The last step failed and the group's ranks lost every sequence
  // (it re-forms): all running requests go back to the head of the queue to
  // recompute, in arrival order.
  void RequeueAll();

  // Takes every request out (the group left service): blocks freed, state
  // reset for recompute, in arrival order. Outputs so far are kept.
  std::vector<std::unique_ptr<Request>> TakeAll();
  // Queues a request taken from another scheduler, by its arrival time (so
  // it is not overtaken by later arrivals), to recompute what it had.
  void Requeue(std::unique_ptr<Request> request);

  // A paused request keeps its blocks but is not scheduled (its client is
  // not reading its output) until unpaused; unknown ids are ignored.
  void SetPaused(uint64_t id, bool paused);

  const Request* Find(uint64_t id) const;
  bool HasWork() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const BlockManager& blocks() const { return blocks_; }
  // Blocks owned only by live requests, each request in exactly one queue.
  absl::Status CheckConsistency() const;
  // Prompt tokens whose KV came from the prefix cache, all requests so far.
  int64_t cached_tokens() const { return cached_tokens_; }
  // Prompt tokens looked up in the prefix cache (every admitted prompt's,
  // when caching is on), all requests so far: the hits' denominator.
  int64_t queried_tokens() const { return queried_tokens_; }

 private:
  enum class Part { kNone, kDecode, kPrefill };
  Part PartOf(const Request* r) const;
  void Preempt(Request* request);
  // Waiting, nothing computed, unknown to the ranks.
  static void ToWaiting(Request* request);
  // Hashes of `r`'s first `count` full blocks.
  absl::Span<const uint64_t> BlockHashes(Request* r, int64_t count) const;
  void Release(Request* request);
  std::unique_ptr<Request> Take(uint64_t id);

  SchedulerConfig config_;
  const Clock* clock_;
  BlockManager blocks_;
  std::map<uint64_t, std::unique_ptr<Request>> requests_;
  std::deque<Request*> waiting_;    // arrival order, preempted ones first
  std::vector<Request*> running_;   // arrival order
  std::vector<uint64_t> released_;  // since the last Schedule
  std::vector<uint64_t> arrived_;   // since the last Schedule
  uint64_t next_step_id_ = 1;
  int64_t num_preemptions_ = 0;
  int64_t cached_tokens_ = 0;
  int64_t queried_tokens_ = 0;
};

}  // namespace shift
