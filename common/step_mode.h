// How a step is split over a worker group's ranks (docs/architecture.md,
// Modes and the KV layout). The one place a mode is named: the policy picks
// one, the engine runs it, and the router maps it to the wire.
#pragma once

namespace shift {

enum class StepMode {
  kTensorParallel,    // every rank: all tokens, its heads and MLP slice
  kSequenceParallel,  // every rank: its slice of the tokens, all weights
};

// "tp" or "sp": metrics labels, traces, policy names.
inline const char* StepModeName(StepMode mode) {
  return mode == StepMode::kSequenceParallel ? "sp" : "tp";
}

}  // namespace shift
