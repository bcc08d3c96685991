// A router's step plan as the engine's batch: the plan's released sequences
// are forgotten, new ones start, running ones grow by their new blocks, in
// plan order. Checks nothing itself: Engine::Step refuses a batch that does
// not fit the model or the KV cache (ids outside the vocabulary, blocks
// outside the cache, positions past a block table), so a broken or hostile
// plan is an error, never a crash.
#pragma once

#include <vector>

#include "shift/v1/internal.pb.h"
#include "worker/engine.h"
#include "worker/sequence_table.h"

namespace shift {

std::vector<SequenceStep> PlanSteps(const v1::internal::StepPlan& plan, SequenceTable* sequences);

}  // namespace shift
