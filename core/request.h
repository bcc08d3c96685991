// A generation request as the router's scheduler sees it: the prompt, the
// validated sampling and stopping parameters, and the state that moves as
// steps run (tokens computed into the KV cache, tokens generated, timings).
// Plain data: the scheduler owns it; nothing here knows about gRPC.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace shift {

enum class FinishReason {
  kNone,       // still running
  kLength,     // max_tokens generated
  kStop,       // a stop token id (or, decided outside the scheduler, a stop string)
  kEos,        // the model's end-of-sequence token
  kCancelled,  // the client went away, its deadline passed, or the server drains
};

const char* FinishReasonName(FinishReason reason);

struct RequestParams {
  uint32_t max_tokens = 16;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;  // 0: off
  uint64_t seed = 0;
  std::vector<int32_t> stop_token_ids;
  std::vector<int32_t> eos_token_ids;  // the model's; ignored with ignore_eos
  bool ignore_eos = false;
  bool return_logprob = false;
  uint32_t top_logprobs = 0;  // alternatives per token (they imply return_logprob)
  // Its own time-per-output-token target in seconds (GenerateRequest's
  // tpot_slo_ms); the tighter of it and the group's applies. 0: the group's.
  double tpot_target = 0;
};

struct Request {
  enum class State { kWaiting, kRunning, kFinished };

  uint64_t id = 0;  // also the sequence id the ranks see
  // Whose request it is (the router's number for its API key's tenant; 0
  // without keys): prefix-cache blocks are shared within a tenant only.
  uint64_t tenant = 0;
  // The client's request_id or one the router gave it (the step trace names
  // each arrival with it; empty where no front end gave one).
  std::string request_id;
  std::vector<int32_t> prompt;
  RequestParams params;
  absl::Time arrival;

  State state = State::kWaiting;
  std::vector<int32_t> output;  // generated tokens
  std::vector<float> logprobs;  // one per output token when asked
  // Tokens (of prompt then output, then pending ones) whose KV is in the
  // cache, or will be once the steps in flight end.
  int64_t num_computed = 0;
  // Steps in flight that sample this sequence's next tokens, not known yet,
  // oldest first: the running step's, and the next one's when it was planned
  // ahead of the running step's results (so at most two). A pending token
  // is the input of the sequence's next decode (kPendingToken in the plan):
  // the ranks know it, the router not yet.
  std::vector<uint64_t> pending_steps;
  // Whether the ranks hold this sequence's state, and how many of its blocks
  // they have been sent.
  bool on_ranks = false;
  size_t blocks_sent = 0;
  int num_preemptions = 0;
  // Not scheduled while its client is not reading (Scheduler::SetPaused).
  bool paused = false;
  // Hashes of the full blocks of prompt then output, each chained over all
  // tokens before its end (the prefix cache's keys); filled as needed.
  std::vector<uint64_t> block_hashes;
  // Tokens whose KV came from the prefix cache at the latest admission.
  int64_t num_cached_tokens = 0;
  FinishReason finish = FinishReason::kNone;
  absl::Time first_scheduled = absl::InfiniteFuture();
  absl::Time first_token = absl::InfiniteFuture();
  absl::Time last_token = absl::InfiniteFuture();  // when its latest token came
  // Steps this request had tokens in, by mode (its access log line).
  int32_t tp_steps = 0;
  int32_t sp_steps = 0;

  int64_t num_tokens() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  // With the tokens of the steps in flight.
  int64_t num_planned_tokens() const {
    return num_tokens() + static_cast<int64_t>(pending_steps.size());
  }
  // Token at position i of prompt followed by output.
  int32_t token(int64_t i) const {
    const int64_t p = static_cast<int64_t>(prompt.size());
    return i < p ? prompt[i] : output[i - p];
  }
  // Tokens [begin, begin + n) of prompt followed by output.
  std::vector<int32_t> tokens(int64_t begin, int64_t n) const {
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out[i] = token(begin + i);
    return out;
  }
};

}  // namespace shift
