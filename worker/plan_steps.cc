#include "worker/plan_steps.h"

namespace shift {

std::vector<SequenceStep> PlanSteps(const v1::internal::StepPlan& plan, SequenceTable* sequences) {
  for (uint64_t id : plan.released_seq_ids()) sequences->Release(id);
  std::vector<SequenceStep> batch;
  batch.reserve(plan.sequences_size());
  for (const v1::internal::ScheduledSequence& s : plan.sequences()) {
    const v1::internal::SequenceSampling& p = s.sampling();
    SequenceStep step =
        sequences->Next(s.seq_id(), s.is_new(),
                        {p.temperature(), p.top_p(), static_cast<int32_t>(p.top_k()), p.seed()},
                        static_cast<int32_t>(p.top_logprobs()), s.new_block_ids());
    step.token_ids.assign(s.token_ids().begin(), s.token_ids().end());
    step.start_position = s.start_position();
    step.sample = s.sample();
    step.return_logits = plan.return_logits();
    batch.push_back(std::move(step));
  }
  return batch;
}

}  // namespace shift
