#include "worker/local_executor.h"

#include <utility>

namespace shift {

absl::StatusOr<ExecutedStep> LocalExecutor::Execute(const SchedulerOutput& step, StepMode mode,
                                                    absl::Span<const uint64_t> released) {
  for (uint64_t id : released) sequences_.Release(id);
  std::vector<SequenceStep> batch;
  batch.reserve(step.sequences.size());
  for (const ScheduledSequence& s : step.sequences) {
    const RequestParams& p = s.request->params;
    SequenceStep q = sequences_.Next(s.seq_id, s.is_new, {p.temperature, p.top_p, p.top_k, p.seed},
                                     static_cast<int32_t>(p.top_logprobs), s.new_block_ids);
    q.token_ids = s.token_ids;
    q.start_position = s.start_position;
    q.sample = s.sample;
    q.return_logits = s.sample && logits_for_.count(s.seq_id) > 0;
    batch.push_back(std::move(q));
  }
  ExecutedStep executed;
  executed.started = absl::Now();
  absl::StatusOr<std::vector<EngineSample>> out = engine_->Step(batch, mode);
  executed.completed = absl::Now();
  if (!out.ok()) {
    // As a group re-forming: the scheduler sends every sequence anew.
    sequences_.Clear();
    return out.status();
  }
  executed.rank_seconds = absl::ToDoubleSeconds(executed.completed - executed.started);
  executed.sampled.reserve(out->size());
  for (EngineSample& t : *out) {
    if (!t.logits.empty() && on_sample_) on_sample_(t);
    executed.sampled.push_back({t.seq_id, t.token_id, t.logprob, std::move(t.top)});
  }
  if (engine_->rank() != 0) {
    // A rank other than the leader (an emulated one) samples nothing: each
    // sequence goes on with its last token, so the steps keep their shape.
    for (const ScheduledSequence& s : step.sequences) {
      if (!s.sample) continue;
      const int32_t last = s.token_ids.back();
      executed.sampled.push_back({s.seq_id, last == kPendingToken ? 0 : last, 0.0f, {}});
    }
  }
  return executed;
}

}  // namespace shift
