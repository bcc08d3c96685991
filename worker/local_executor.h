// A step executor that runs each step on an engine in this process (the
// engine of shift-generate): the plan's diffs are applied to per-sequence
// state kept here (block tables, sampling parameters), as a rank does with
// the plans the router sends it.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <vector>

#include "core/step_executor.h"
#include "worker/engine.h"
#include "worker/sequence_table.h"

namespace shift {

class LocalExecutor final : public StepExecutor {
 public:
  // `engine` must outlive the executor.
  explicit LocalExecutor(Engine* engine) : engine_(engine) {}

  // Each sample of a sequence in `seq_ids` comes back with its logits row,
  // given to `on_sample` (e.g. to dump them for an independent comparison).
  void ReturnLogits(std::set<uint64_t> seq_ids,
                    std::function<void(const EngineSample&)> on_sample) {
    logits_for_ = std::move(seq_ids);
    on_sample_ = std::move(on_sample);
  }

  absl::StatusOr<ExecutedStep> Execute(const SchedulerOutput& step, StepMode mode,
                                       absl::Span<const uint64_t> released) override;

 private:
  Engine* engine_;
  SequenceTable sequences_;
  std::set<uint64_t> logits_for_;
  std::function<void(const EngineSample&)> on_sample_;
};

}  // namespace shift
