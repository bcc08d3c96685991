// The GPU engine flags shift-worker and shift-generate share
// (--enforce_eager, --cuda_graph_max_batch, --fp8_gemm), so both binaries
// mean the same by them.
#pragma once

#include "worker/engine.h"

namespace shift {

// Sets `options`' graph and FP8 fields from the flags.
void ApplyEngineFlags(EngineOptions* options);

}  // namespace shift
