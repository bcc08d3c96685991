// What a rank remembers of each running sequence between steps (its block
// table and sampling parameters), so that a step can arrive as a diff: a
// sequence new to the rank in full, a running one as its new tokens and
// new blocks. The rank applies the router's plans to it; the in-process
// executor applies the scheduler's steps.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "worker/engine.h"

namespace shift {

class SequenceTable {
 public:
  // The engine's part of a step for sequence `seq_id`: when `is_new`, its
  // state starts over with `sampling` and `top_logprobs` (ignored
  // otherwise); its block table grows by `new_blocks`. The caller fills in
  // the tokens, start position and what to return.
  template <typename Blocks>
  SequenceStep Next(uint64_t seq_id, bool is_new, const kernels::SamplingParams& sampling,
                    int32_t top_logprobs, const Blocks& new_blocks) {
    State& state = sequences_[seq_id];
    if (is_new) {
      state.block_table.clear();
      state.sampling = sampling;
      state.top_logprobs = top_logprobs;
    }
    state.block_table.insert(state.block_table.end(), new_blocks.begin(), new_blocks.end());
    SequenceStep step;
    step.seq_id = seq_id;
    step.block_table = state.block_table;
    step.sampling = state.sampling;
    step.top_logprobs = state.top_logprobs;
    return step;
  }
  void Release(uint64_t seq_id) { sequences_.erase(seq_id); }
  void Clear() { sequences_.clear(); }

 private:
  struct State {
    std::vector<int32_t> block_table;
    kernels::SamplingParams sampling;
    int32_t top_logprobs = 0;
  };
  std::map<uint64_t, State> sequences_;
};

}  // namespace shift
