#include "worker/local_executor.h"

#include <utility>

namespace shift {

absl::StatusOr<ExecutedStep> LocalExecutor::Execute(const SchedulerOutput& step, StepMode mode,
                                                    absl::Span<const uint64_t> released) {
  for (uint64_t id : released) sequences_.erase(id);
  std::vector<SequenceStep> batch;
  batch.reserve(step.sequences.size());
  for (const ScheduledSequence& s : step.sequences) {
    SequenceState& state = sequences_[s.seq_id];
    if (s.is_new) {
      const RequestParams& p = s.request->params;
      state.block_table.clear();
      state.sampling = {p.temperature, p.top_p, p.top_k, p.seed};
      state.top_logprobs = static_cast<int32_t>(p.top_logprobs);
    }
    state.block_table.insert(state.block_table.end(), s.new_block_ids.begin(),
                             s.new_block_ids.end());
    SequenceStep q;
    q.seq_id = s.seq_id;
    q.token_ids = s.token_ids;
    q.start_position = s.start_position;
    q.block_table = state.block_table;
    q.sample = s.sample;
    q.sampling = state.sampling;
    q.return_logits = s.sample && logits_for_.count(s.seq_id) > 0;
    q.top_logprobs = state.top_logprobs;
    batch.push_back(std::move(q));
  }
  ExecutedStep executed;
  executed.started = absl::Now();
  absl::StatusOr<std::vector<EngineSample>> out = engine_->Step(batch, mode);
  executed.completed = absl::Now();
  if (!out.ok()) {
    // As a group re-forming: the scheduler sends every sequence anew.
    sequences_.clear();
    return out.status();
  }
  executed.rank_seconds = absl::ToDoubleSeconds(executed.completed - executed.started);
  executed.sampled.reserve(out->size());
  for (EngineSample& t : *out) {
    if (!t.logits.empty() && on_sample_) on_sample_(t);
    executed.sampled.push_back({t.seq_id, t.token_id, t.logprob, std::move(t.top)});
  }
  return executed;
}

}  // namespace shift
