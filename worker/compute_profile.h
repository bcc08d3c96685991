// The compute-profile file: what one rank's share of each step costs, one
// JSON object per line, written by shift-generate and shift-worker
// (--compute_profile) and read by shift-sim (--compute_profile):
//   world_size, rank    the group the rank belongs to (emulated or real)
//   mode                "tp" or "sp"
//   tokens, sequences, decodes, max_context, attention
//                       the step's shape as the shift policy sees it
//                       (core/shift_policy.h, StepShape)
//   step_s              the engine's step on this rank
//   collective_s        of which in collectives (emulated: the stand-in
//                       copies, timed apart)
//   collective_bytes    bytes a real rank receives in the step's collectives
//   compute_s           step_s - collective_s
//   gemm_flops          the step's GEMM FLOPs on this rank (the backend's
//                       counters)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/step_mode.h"
#include "core/shift_policy.h"
#include "worker/engine.h"

namespace shift {

struct ComputeProfileLine {
  int world_size = 1, rank = 0;
  StepMode mode = StepMode::kTensorParallel;
  StepShape shape;
  double step_s = 0, collective_s = 0;
  uint64_t collective_bytes = 0, gemm_flops = 0;
};

// The line, JSON, with its newline.
std::string FormatComputeProfileLine(const ComputeProfileLine& line);

// The shape of an engine step as the scheduler counts it (a decode: one
// token, sampled, after earlier ones).
StepShape ShapeOfBatch(const std::vector<SequenceStep>& batch);

}  // namespace shift
