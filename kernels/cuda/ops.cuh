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
// sequence's cached positions 0..its own (online softmax, fp32).
cudaError_t LaunchAttention(const Bf16* q, int64_t ld_q, const Bf16* k_cache, const Bf16* v_cache,
                            int64_t block_size, int64_t kv_heads, int64_t head_dim, int64_t heads,
                            float scale, DeviceStep step, Bf16* out, int64_t ld_out,
                            cudaStream_t stream);

// out = silu(gate) * up (bf16).
cudaError_t LaunchSiluMul(const Bf16* gate, int64_t ld_gate, const Bf16* up, int64_t ld_up,
                          Bf16* out, int64_t ld_out, int64_t rows, int64_t cols,
                          cudaStream_t stream);

}  // namespace shift::kernels::cuda
