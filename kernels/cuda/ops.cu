// The CUDA backend's kernels: straightforward and correct first (bf16
// storage, fp32 arithmetic, RoPE angles in fp64 as on the CPU); fast
// versions are the GPU speed issue's.
#include <cfloat>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/ops.cuh"

namespace shift::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Load(const Bf16* p) { return LoadBf16(p); }

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void EmbeddingKernel(const Bf16* table, int64_t ld_table, const int32_t* ids, Bf16* out,
                                int64_t ld_out, int64_t cols) {
  const int64_t t = blockIdx.x;
  const Bf16* row = table + static_cast<int64_t>(ids[t]) * ld_table;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[t * ld_out + c] = row[c];
}

// The sum of `value` over the block, on every thread.
__device__ float BlockSum(float value) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffff, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += partial[w];
  __syncthreads();
  return total;
}

__global__ void RmsNormKernel(Bf16* residual, int64_t ld_residual, const Bf16* add, int64_t ld_add,
                              const Bf16* weight, float eps, Bf16* out, int64_t ld_out,
                              int64_t cols) {
  const int64_t r = blockIdx.x;
  Bf16* h = residual + r * ld_residual;
  float squares = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float x = Load(h + c);
    if (add != nullptr) {
      x += Load(add + r * ld_add + c);
      h[c] = ToBf16(x);
      x = Load(h + c);  // what the residual stream now holds
    }
    squares += x * x;
  }
  const float inv = rsqrtf(BlockSum(squares) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    out[r * ld_out + c] = ToBf16(Load(h + c) * inv * Load(weight + c));
  }
}

__global__ void RopeKernel(Bf16* x, int64_t ld, int64_t heads, int64_t head_dim,
                           const double* inv_freq, const int64_t* positions, int64_t first) {
  const int64_t t = blockIdx.x, half = head_dim / 2;
  const double position = static_cast<double>(positions[first + t]);
  for (int64_t i = threadIdx.x; i < heads * half; i += blockDim.x) {
    const int64_t h = i / half, j = i % half;
    const double angle = position * inv_freq[j];
    const float c = static_cast<float>(cos(angle)), s = static_cast<float>(sin(angle));
    Bf16* v = x + t * ld + h * head_dim;
    const float x1 = Load(v + j), x2 = Load(v + j + half);
    v[j] = ToBf16(x1 * c - x2 * s);
    v[j + half] = ToBf16(x2 * c + x1 * s);
  }
}

__global__ void WriteKvKernel(const Bf16* k, int64_t ld_k, const Bf16* v, int64_t ld_v,
                              Bf16* k_cache, Bf16* v_cache, int64_t block_size, int64_t width,
                              DeviceStep step) {
  const int64_t t = blockIdx.x;
  const int64_t pos = step.positions[t];
  const int32_t* table = step.tables + step.table_offset[step.sequence[t]];
  const int64_t slot =
      static_cast<int64_t>(table[pos / block_size]) * block_size + pos % block_size;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * ld_k + c];
    v_cache[slot * width + c] = v[t * ld_v + c];
  }
}

// One block per (token, query head); each warp runs an online softmax over
// positions warp, warp + warps, ...; the warps' states are joined at the
// end. Lane l holds elements l, l + 32, ... of the head (head_dim <= 256).
constexpr int kMaxPerLane = 8;

__global__ void AttentionKernel(const Bf16* q, int64_t ld_q, const Bf16* k_cache,
                                const Bf16* v_cache, int64_t block_size, int64_t kv_heads,
                                int64_t head_dim, int64_t heads, int64_t window, float scale,
                                DeviceStep step, Bf16* out, int64_t ld_out) {
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t kv = h / (heads / kv_heads), width = kv_heads * head_dim;
  const int64_t last = step.positions[t];
  // A sliding window keeps positions last - window + 1 .. last.
  const int64_t first = window > 0 && last >= window ? last - window + 1 : 0;
  const int32_t* table = step.tables + step.table_offset[step.sequence[t]];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float qv[kMaxPerLane], acc[kMaxPerLane];
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t i = lane + 32 * e;
    qv[e] = i < head_dim ? Load(q + t * ld_q + h * head_dim + i) : 0.0f;
    acc[e] = 0.0f;
  }
  float max = -FLT_MAX, sum = 0.0f;
  for (int64_t j = first + warp; j <= last; j += warps) {
    const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
    const Bf16* key = k_cache + slot * width + kv * head_dim;
    const Bf16* value = v_cache + slot * width + kv * head_dim;
    float dot = 0.0f;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t i = lane + 32 * e;
      if (i < head_dim) dot += qv[e] * Load(key + i);
    }
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffff, dot, offset);
    const float score = dot * scale;
    const float new_max = fmaxf(max, score);
    const float rescale = expf(max - new_max), p = expf(score - new_max);
    sum = sum * rescale + p;
    for (int e = 0; e < kMaxPerLane; ++e) {
      const int64_t i = lane + 32 * e;
      acc[e] = acc[e] * rescale + (i < head_dim ? p * Load(value + i) : 0.0f);
    }
    max = new_max;
  }
  // Join the warps: each publishes its max, sum and accumulator.
  extern __shared__ float shared[];  // [warps][2 + head_dim]
  float* mine = shared + warp * (2 + head_dim);
  if (lane == 0) {
    mine[0] = max;
    mine[1] = sum;
  }
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int64_t i = lane + 32 * e;
    if (i < head_dim) mine[2 + i] = acc[e];
  }
  __syncthreads();
  float top = -FLT_MAX;
  for (int w = 0; w < warps; ++w) top = fmaxf(top, shared[w * (2 + head_dim)]);
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) {
    const float* s = shared + w * (2 + head_dim);
    if (s[1] > 0.0f) total += s[1] * expf(s[0] - top);
  }
  for (int64_t i = threadIdx.x; i < head_dim; i += blockDim.x) {
    float value = 0.0f;
    for (int w = 0; w < warps; ++w) {
      const float* s = shared + w * (2 + head_dim);
      if (s[1] > 0.0f) value += s[2 + i] * expf(s[0] - top);
    }
    out[t * ld_out + h * head_dim + i] = ToBf16(value / total);
  }
}

__global__ void SiluMulKernel(const Bf16* gate, int64_t ld_gate, const Bf16* up, int64_t ld_up,
                              Bf16* out, int64_t ld_out, int64_t rows, int64_t cols) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const float g = Load(gate + r * ld_gate + c);
  out[r * ld_out + c] = ToBf16(g / (1.0f + expf(-g)) * Load(up + r * ld_up + c));
}

// One block per row: the first index of the row's largest logit, and its
// log-softmax (as cpu::Sample's greedy path and cpu::LogProb compute them).
constexpr int kSampleThreads = 1024;

__global__ void GreedySampleKernel(const float* logits, int64_t ld, int64_t vocab, int32_t* ids,
                                   float* logprobs) {
  __shared__ float best_value[32];
  __shared__ int64_t best_index[32];
  const float* row = logits + blockIdx.x * ld;
  float value = -INFINITY;
  int64_t index = vocab;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (row[i] > value) value = row[i], index = i;  // strictly: the first index wins ties
  }
  auto better = [](float v, int64_t i, float w, int64_t j) { return v > w || (v == w && i < j); };
  for (int offset = 16; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffff, value, offset);
    const int64_t j = __shfl_xor_sync(0xffffffff, index, offset);
    if (better(v, j, value, index)) value = v, index = j;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) best_value[warp] = value, best_index[warp] = index;
  __syncthreads();
  value = best_value[0];
  index = best_index[0];
  for (int w = 1; w < warps; ++w) {
    if (better(best_value[w], best_index[w], value, index))
      value = best_value[w], index = best_index[w];
  }
  float total = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) total += expf(row[i] - value);
  total = BlockSum(total);
  if (threadIdx.x == 0) {
    ids[blockIdx.x] = static_cast<int32_t>(index);
    logprobs[blockIdx.x] = -logf(total);
  }
}

}  // namespace

cudaError_t LaunchGreedySample(const float* logits, int64_t ld, int64_t rows, int64_t vocab,
                               int32_t* ids, float* logprobs, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GreedySampleKernel<<<static_cast<unsigned>(rows), kSampleThreads, 0, stream>>>(logits, ld, vocab,
                                                                                 ids, logprobs);
  return cudaGetLastError();
}

cudaError_t LaunchEmbedding(const Bf16* table, int64_t ld_table, DeviceStep step, int64_t first,
                            Bf16* out, int64_t ld_out, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  EmbeddingKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      table, ld_table, step.token_ids + first, out, ld_out, cols);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(Bf16* residual, int64_t ld_residual, const Bf16* add, int64_t ld_add,
                          const Bf16* weight, float eps, Bf16* out, int64_t ld_out, int64_t rows,
                          int64_t cols, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      residual, ld_residual, add, ld_add, weight, eps, out, ld_out, cols);
  return cudaGetLastError();
}

cudaError_t LaunchRope(Bf16* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim,
                       const double* inv_freq, DeviceStep step, int64_t first,
                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RopeKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, ld, heads, head_dim, inv_freq,
                                                                   step.positions, first);
  return cudaGetLastError();
}

cudaError_t LaunchWriteKv(const Bf16* k, int64_t ld_k, const Bf16* v, int64_t ld_v, Bf16* k_cache,
                          Bf16* v_cache, int64_t block_size, int64_t width, DeviceStep step,
                          cudaStream_t stream) {
  if (step.num_tokens == 0) return cudaSuccess;
  WriteKvKernel<<<static_cast<unsigned>(step.num_tokens), kThreads, 0, stream>>>(
      k, ld_k, v, ld_v, k_cache, v_cache, block_size, width, step);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(const Bf16* q, int64_t ld_q, const Bf16* k_cache, const Bf16* v_cache,
                            int64_t block_size, int64_t kv_heads, int64_t head_dim, int64_t heads,
                            int64_t window, float scale, DeviceStep step, Bf16* out, int64_t ld_out,
                            cudaStream_t stream) {
  if (step.num_tokens == 0) return cudaSuccess;
  if (head_dim > 32 * kMaxPerLane) return cudaErrorInvalidValue;
  constexpr int kWarps = 4;
  const dim3 grid(static_cast<unsigned>(step.num_tokens), static_cast<unsigned>(heads));
  const size_t shared = kWarps * (2 + head_dim) * sizeof(float);
  AttentionKernel<<<grid, 32 * kWarps, shared, stream>>>(q, ld_q, k_cache, v_cache, block_size,
                                                         kv_heads, head_dim, heads, window, scale,
                                                         step, out, ld_out);
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(const Bf16* gate, int64_t ld_gate, const Bf16* up, int64_t ld_up,
                          Bf16* out, int64_t ld_out, int64_t rows, int64_t cols,
                          cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  SiluMulKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(gate, ld_gate, up, ld_up, out, ld_out,
                                                              rows, cols);
  return cudaGetLastError();
}

}  // namespace shift::kernels::cuda
