// Launchers of the CUDA backend's kernels (kernels/cuda/ops.cu), declared
// without absl so that nvcc never sees absl headers. Pointers are device
// pointers; matrices are row-major with a row stride `ld` in elements.
// Storage is bf16 (`Bf16` = its bits) or fp32 as each launcher says; every
// kernel computes in fp32. Each returns the launch's error.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace shift::kernels::cuda {

using Bf16 = uint16_t;

// A step's token layout on the device (the CUDA StepData holds it).
struct DeviceStep {
  const int32_t* token_ids;     // [tokens]
  const int64_t* positions;     // [tokens]
  const int32_t* sequence;      // [tokens] -> sequence index
  const int32_t* table_offset;  // [sequences] first entry in `tables`
  const int32_t* tables;        // every sequence's block table, concatenated
  int64_t num_tokens;
  const int32_t* seq_first;   // [sequences] index of its first token (tokens are contiguous)
  const int32_t* seq_tokens;  // [sequences] its new tokens this step
  const int32_t* seq_kv_len;  // [sequences] its cached positions after this step
  int64_t num_sequences;
};

// out[t] = table[token_ids[first + t]] for `rows` tokens (bf16).
cudaError_t LaunchEmbedding(const Bf16* table, int64_t ld_table, DeviceStep step, int64_t first,
                            Bf16* out, int64_t ld_out, int64_t rows, int64_t cols,
                            cudaStream_t stream);

// With `add`, residual += add (stored back); out = rms_norm(residual) * weight.
cudaError_t LaunchRmsNorm(Bf16* residual, int64_t ld_residual, const Bf16* add, int64_t ld_add,
                          const Bf16* weight, float eps, Bf16* out, int64_t ld_out, int64_t rows,
                          int64_t cols, cudaStream_t stream);

// Rotates `heads` heads of head_dim in each of `rows` rows of x, for the
// positions of tokens first..; inv_freq has head_dim / 2 entries.
cudaError_t LaunchRope(Bf16* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim,
                       const double* inv_freq, DeviceStep step, int64_t first, cudaStream_t stream);

// Writes every token's K and V (tokens x width, bf16) into the paged caches
// ([blocks * block_size][width]).
cudaError_t LaunchWriteKv(const Bf16* k, int64_t ld_k, const Bf16* v, int64_t ld_v, Bf16* k_cache,
                          Bf16* v_cache, int64_t block_size, int64_t width, DeviceStep step,
                          cudaStream_t stream);

// Causal attention of every token's `heads` query heads over its
// sequence's cached positions 0..its own (online softmax, fp32); with
// `window` > 0 over the last `window` of them only (sliding window).
cudaError_t LaunchAttention(const Bf16* q, int64_t ld_q, const Bf16* k_cache, const Bf16* v_cache,
                            int64_t block_size, int64_t kv_heads, int64_t head_dim, int64_t heads,
                            int64_t window, float scale, DeviceStep step, Bf16* out, int64_t ld_out,
                            cudaStream_t stream);

// The same attention on tensor cores (mma.sync m16n8k16, sm_80 and later),
// flash-style: a block takes kFlashRows rows of one sequence, a row being a
// (token, query head) pair of one KV head's group, so every K/V tile loaded
// into shared memory serves all the group's query heads (GQA). Decodes and
// prefill chunks take the same path. With `splits` > 1 each block covers
// 1/splits of the sequence's positions (flash-decoding) and writes fp32
// partial results to `partial` (splits * tokens * heads * (head_dim + 2)
// floats), joined by a second kernel. `row_tiles` is the most row tiles any
// sequence needs: ceil(tokens * heads / kv_heads / kFlashRows). `window`
// as for LaunchAttention.
inline constexpr int64_t kFlashRows = 64;
bool FlashAttentionSupports(int64_t head_dim);
cudaError_t LaunchFlashAttention(const Bf16* q, int64_t ld_q, const Bf16* k_cache,
                                 const Bf16* v_cache, int64_t block_size, int64_t kv_heads,
                                 int64_t head_dim, int64_t heads, int64_t window, float scale,
                                 DeviceStep step, int64_t row_tiles, int64_t splits, float* partial,
                                 Bf16* out, int64_t ld_out, cudaStream_t stream);

// Greedy sampling on the device: for each of `rows` fp32 logit rows, the
// first index of its largest value and that value's log-softmax.
cudaError_t LaunchGreedySample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                               int32_t* ids, float* logprobs, cudaStream_t stream);

// FP8 (E4M3) GEMMs (fp8.cu). Per row of x (rows x cols): scale = max|x| /
// 448 (1 for a row of zeros) and q = x / scale in E4M3, saturated.
cudaError_t LaunchQuantizeRowsE4M3(const Bf16* x, int64_t ld_x, int64_t rows, int64_t cols,
                                   uint8_t* q, int64_t ld_q, float* scales, cudaStream_t stream);
// y = acc · row_scale[r] · col_scale[c] (+ bias[c]); y bf16, or fp32 with y_f32.
cudaError_t LaunchScaleRowsCols(const float* acc, int64_t ld_acc, int64_t rows, int64_t cols,
                                const float* row_scale, const float* col_scale, const Bf16* bias,
                                void* y, int64_t ld_y, bool y_f32, cudaStream_t stream);
// out = codes · row_scale[r], in bf16.
cudaError_t LaunchDequantizeE4M3(const uint8_t* codes, int64_t ld, int64_t rows, int64_t cols,
                                 const float* row_scale, Bf16* out, int64_t ld_out,
                                 cudaStream_t stream);

// out = silu(gate) * up (bf16).
cudaError_t LaunchSiluMul(const Bf16* gate, int64_t ld_gate, const Bf16* up, int64_t ld_up,
                          Bf16* out, int64_t ld_out, int64_t rows, int64_t cols,
                          cudaStream_t stream);

}  // namespace shift::kernels::cuda
