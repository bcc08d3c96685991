// Parameters of the operations every backend implements, and the layout
// constants of the deterministic parallel split: the canonical reduction
// tree's groups (which K range a row-parallel TP rank owns) and the panel
// width (to which a column-parallel TP slice aligns). No device code here.
#pragma once

#include <cstdint>

namespace shift::kernels {

// Columns per panel: a column-parallel (TP) slice is a range of panels.
inline constexpr int64_t kPanelWidth = 16;
// Groups of the canonical K reduction (docs/architecture.md, Determinism).
inline constexpr int kReductionGroups = 8;

// Which part of y = x · Wᵀ a GEMM computes.
struct GemmRange {
  // Output columns [n_begin, n_end); n_begin a multiple of kPanelWidth.
  int64_t n_begin = 0;
  int64_t n_end = -1;  // -1: to W.n()
  // Reduction groups [group_begin, group_begin + group_count): the whole tree
  // (0, 8) or one aligned subtree (count 1, 2 or 4) — what a row-parallel
  // TP rank owns. `x` then holds only those groups' K columns.
  int group_begin = 0;
  int group_count = kReductionGroups;
};

// Llama 3.1 RoPE frequency scaling (rope_scaling of config.json).
struct Llama3Scaling {
  double factor, low_freq_factor, high_freq_factor;
  int64_t original_max_position_embeddings;
};

// Sampling parameters of one row.
struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  int32_t top_k = 0;  // 0: off
  uint64_t seed = 0;
};

}  // namespace shift::kernels
