#include "router/step_plan.h"

namespace shift {

v1::internal::StepPlan BuildStepPlan(const SchedulerOutput& out, StepMode mode,
                                     absl::Span<const uint64_t> released_seq_ids) {
  v1::internal::StepPlan plan;
  plan.set_step_id(out.step_id);
  plan.set_mode(ToProto(mode));
  plan.set_follows_previous(out.follows_previous);
  plan.mutable_released_seq_ids()->Add(released_seq_ids.begin(), released_seq_ids.end());
  plan.mutable_sequences()->Reserve(static_cast<int>(out.sequences.size()));
  for (const ScheduledSequence& s : out.sequences) {
    v1::internal::ScheduledSequence* seq = plan.add_sequences();
    seq->set_seq_id(s.seq_id);
    seq->set_is_new(s.is_new);
    seq->mutable_token_ids()->Add(s.token_ids.begin(), s.token_ids.end());
    seq->set_start_position(static_cast<uint32_t>(s.start_position));
    for (int32_t b : s.new_block_ids) seq->add_new_block_ids(static_cast<uint32_t>(b));
    seq->set_sample(s.sample);
    if (s.is_new) {
      const RequestParams& p = s.request->params;
      v1::internal::SequenceSampling* sampling = seq->mutable_sampling();
      sampling->set_temperature(p.temperature);
      sampling->set_top_p(p.top_p);
      sampling->set_top_k(static_cast<uint32_t>(p.top_k));
      sampling->set_seed(p.seed);
      sampling->set_top_logprobs(p.top_logprobs);
      sampling->set_return_logprob(p.return_logprob);
    }
  }
  return plan;
}

}  // namespace shift
