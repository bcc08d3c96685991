// The deterministic fp32 GEMM every CPU layer uses: y = x · Wᵀ with W in the
// Hugging Face [out_features][in_features] layout, packed once into column
// panels. Every output element reduces over K in the canonical order of the
// design: K in 8 contiguous groups, each summed in sequence from 0, joined by
// the tree ((g0+g1)+(g2+g3))+((g4+g5)+(g6+g7)). SIMD runs across output
// columns only, so an element's bits never depend on M, on which columns a
// call computes, on threads or on the instruction set.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/op_params.h"

namespace shift::kernels::cpu {

// W [n][k] packed as panels of kPanelWidth columns, each stored [k][16]
// (the last panel zero-padded). Owns its memory. Its K columns hold
// `groups` reduction groups: all 8, or the subtree a TP shard holds.
class PackedWeight {
 public:
  PackedWeight() = default;
  // `w` is row-major [n][k]; k must be a multiple of `groups`.
  static PackedWeight Pack(const float* w, int64_t n, int64_t k, int groups = kReductionGroups);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int groups() const { return groups_; }
  int64_t num_panels() const { return (n_ + kPanelWidth - 1) / kPanelWidth; }
  const float* panel(int64_t p) const { return data_.data() + p * k_ * kPanelWidth; }

 private:
  int64_t n_ = 0, k_ = 0;
  int groups_ = kReductionGroups;
  std::vector<float> data_;
};

// y[m][n - n_begin] = Σ_k x[m][k] · W[n][k] over the range, in canonical
// order. x is [m][ldx] (K columns of the range's groups), y is [m][ldy].
// Groups count within those `w` holds.
// `threads` splits panels over that many threads (1: the caller's only).
void Gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const GemmRange& range,
          float* y, int64_t ldy, int threads = 1);

// Joins subtree values (each from a call with group_count 8 / parts) into
// the full tree, parts ∈ {1, 2, 4, 8}: what the deterministic all-reduce
// does with the P ranks' partial sums.
float JoinSubtrees(const float* values, int parts);

// The canonical reduction of one dot product, for references and tests.
float CanonicalDot(const float* a, const float* b, int64_t k);

}  // namespace shift::kernels::cpu
