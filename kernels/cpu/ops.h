// The fp32 CPU kernels of a Llama-family layer other than GEMM: embedding,
// RMSNorm, RoPE (with llama3 scaling), SiLU-and-multiply, bias add, paged
// attention, and sampling. Each reduces in one fixed order per token and
// head, so a token's result does not depend on what else is in the batch or
// on how its prompt was chunked (docs/architecture.md, Determinism).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "kernels/op_params.h"

namespace shift::kernels::cpu {

// out[t][:] = table[ids[t]][:] for each token; table is [vocab][dim].
void Embedding(const float* table, int64_t dim, absl::Span<const int32_t> ids, float* out);

// x[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight, for `tokens` rows of `dim`
// (dim % 8 == 0); the sum of squares uses the canonical 8-group order.
void RmsNorm(const float* x, int64_t tokens, int64_t dim, const float* weight, float eps,
             float* out);

// y[t][n] += bias[n].
void AddBias(float* y, int64_t tokens, int64_t n, const float* bias);

// out[t][i] = silu(gate[t][i]) * up[t][i], silu(g) = g / (1 + exp(-g)).
void SiluMul(const float* gate, const float* up, int64_t tokens, int64_t n, float* out);

// Rotary embedding frequencies of a model (Hugging Face rotate_half layout:
// pairs (i, i + d/2)), including llama3 scaling. One table serves every path.
class Rope {
 public:
  Rope(int64_t head_dim, double theta, std::optional<Llama3Scaling> scaling);
  // Rotates `heads` vectors of head_dim at `x` (contiguous) for `position`.
  void Apply(float* x, int64_t heads, int64_t position) const;
  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  int64_t head_dim_;
  std::vector<double> inv_freq_;
};

// One layer's paged K/V for the kv heads a rank holds:
// [num_blocks][block_size][kv_heads][head_dim] each; `window` > 0: the
// layer's sliding window (a query at q sees keys at q - window + 1 .. q).
struct KvView {
  float* k;
  float* v;
  int64_t block_size, kv_heads, head_dim;
  int64_t window = 0;

  float* KeyAt(int32_t block, int64_t offset, int64_t head) const {
    return k + ((static_cast<int64_t>(block) * block_size + offset) * kv_heads + head) * head_dim;
  }
  float* ValueAt(int32_t block, int64_t offset, int64_t head) const {
    return v + ((static_cast<int64_t>(block) * block_size + offset) * kv_heads + head) * head_dim;
  }
};

// Writes K and V of `tokens` consecutive positions starting at `start`
// ([tokens][kv_heads][head_dim] each) into the sequence's blocks.
void WriteKv(const KvView& cache, absl::Span<const int32_t> block_table, int64_t start,
             int64_t tokens, const float* k, const float* v);

// Attention of one query token at `position` for `heads` query heads
// (q: [heads][head_dim]; query head h reads kv head h / (heads / kv_heads)),
// over cached positions 0..position (with a window, its last `window`) in
// order: scores in the canonical dot
// order, softmax with the max subtracted, values summed in position order.
// The same function serves prefill chunks and decodes, so the result depends
// only on the position, q and the cached K/V. `scratch` holds position + 1
// floats.
void AttendOne(const KvView& cache, absl::Span<const int32_t> block_table, int64_t position,
               const float* q, int64_t heads, float scale, float* out, float* scratch);

// Philox-4x32-10 keyed by (seed, counter): a uniform float in [0, 1), the
// same for the same (seed, position) wherever and whenever it is drawn.
float PhiloxUniform(uint64_t seed, uint64_t counter);

// Samples a token from `logits` (n of them) for the token at `position`.
// Greedy picks the largest logit (lowest id on ties); otherwise logits are
// divided by temperature, ranked (logit descending, id ascending), cut by
// top_k then top_p, and one is drawn with PhiloxUniform(seed, position).
int32_t Sample(const float* logits, int64_t n, const SamplingParams& params, int64_t position);

// Log-softmax of logits[id] (at temperature 1).
float LogProb(const float* logits, int64_t n, int32_t id);

}  // namespace shift::kernels::cpu
