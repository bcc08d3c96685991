// Flash attention over the paged KV cache on tensor cores (mma.sync
// m16n8k16, bf16 in, fp32 accumulate), for prefill chunks and decodes alike.
//
// A block is 4 warps and takes 64 rows of one sequence and one KV head,
// a row being a (token, query head of that KV head's group) pair, so each
// 64-position K/V tile it stages in shared memory serves every query head of
// the group. Each warp owns 16 rows: S = Q·Kᵀ in registers, an online
// softmax on the accumulator fragments (FlashAttention-2's layout: a thread
// holds rows g and g + 8 of its warp's 16), then P (rounded to bf16, reused
// in place as the A operand) times V. Fragment layouts are those of the PTX
// ISA for mma.m16n8k16 (.bf16): g = lane / 4, t = lane % 4.
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/ops.cuh"

namespace shift::kernels::cuda {
namespace {

constexpr int kWarps = 4, kRows = 16 * kWarps, kTile = 64;
static_assert(kRows == kFlashRows);

__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // the launcher refuses devices below sm_80
#endif
}

__device__ __forceinline__ uint32_t Pair(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

template <int D>
__global__ void __launch_bounds__(32 * kWarps)
    FlashAttentionKernel(const Bf16* __restrict__ q, int64_t ld_q, const Bf16* __restrict__ k_cache,
                         const Bf16* __restrict__ v_cache, int block_size, int kv_heads, int group,
                         int window, float scale_log2, DeviceStep step, int splits, float* partial,
                         Bf16* __restrict__ out, int64_t ld_out) {
  static_assert(D % 16 == 0 && D <= 128);
  __shared__ __align__(16) Bf16 ks[kTile][D + 8];
  __shared__ __align__(16) Bf16 vs[kTile][D + 8];

  const int seq = blockIdx.z, kv = blockIdx.y % kv_heads, split = blockIdx.y / kv_heads;
  const int first = step.seq_first[seq], tokens = step.seq_tokens[seq];
  const int kv_len = step.seq_kv_len[seq], rows = tokens * group, row0 = blockIdx.x * kRows;
  if (row0 >= rows) return;
  const int start = kv_len - tokens;  // position of the sequence's first new token
  // This split's positions, whole tiles, cut at the block's last causal one.
  const int per_split = ((kv_len + splits - 1) / splits + kTile - 1) / kTile * kTile;
  const int kv_begin = split * per_split;
  const int last_row = min(rows, row0 + kRows) - 1;
  const int kv_stop = min(min(kv_len, kv_begin + per_split), start + last_row / group + 1);
  // With a sliding window, no row of the block sees a position before its
  // first row's window: tiles wholly before it are skipped.
  const int kv_lo = window > 0 ? max(0, start + row0 / group - window + 1) / kTile * kTile : 0;
  const int32_t* table = step.tables + step.table_offset[seq];
  const int64_t width = static_cast<int64_t>(kv_heads) * D;
  const int heads = kv_heads * group;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wrow0 = row0 + warp * 16;
  const bool active = wrow0 < rows;
  bool ok[2];
  int token[2], head[2], pos[2];
  for (int i = 0; i < 2; ++i) {
    const int r = wrow0 + g + 8 * i;
    ok[i] = r < rows;
    token[i] = first + r / group;
    head[i] = kv * group + r % group;
    pos[i] = start + r / group;
  }
  // Q as A fragments: register j of k-block kk holds row g + 8 * (j & 1),
  // columns 2t + 8 * (j >> 1) and the next.
  uint32_t qa[D / 16][4];
  for (int kk = 0; kk < D / 16; ++kk) {
    for (int j = 0; j < 4; ++j) {
      const int i = j & 1, col = kk * 16 + 2 * t + 8 * (j >> 1);
      qa[kk][j] = ok[i] ? *reinterpret_cast<const uint32_t*>(
                              q + static_cast<int64_t>(token[i]) * ld_q + head[i] * D + col)
                        : 0u;
    }
  }
  float o[D / 8][4];
  for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  constexpr int kChunks = D / 8;  // 16-byte pieces of a row
  for (int base = max(kv_begin, kv_lo); base < kv_stop; base += kTile) {
    for (int c = threadIdx.x; c < kTile * kChunks; c += 32 * kWarps) {
      const int row = c / kChunks, piece = c % kChunks, p = base + row;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = kval;
      if (p < kv_stop) {
        const int64_t slot =
            static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
        const int64_t at = slot * width + kv * D + piece * 8;
        kval = *reinterpret_cast<const uint4*>(k_cache + at);
        vval = *reinterpret_cast<const uint4*>(v_cache + at);
      }
      *reinterpret_cast<uint4*>(&ks[row][piece * 8]) = kval;
      *reinterpret_cast<uint4*>(&vs[row][piece * 8]) = vval;
    }
    __syncthreads();
    if (active) {
      float s[kTile / 8][4];
      for (int nt = 0; nt < kTile / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      for (int kk = 0; kk < D / 16; ++kk) {
        for (int nt = 0; nt < kTile / 8; ++nt) {
          const Bf16* key = &ks[nt * 8 + g][kk * 16 + 2 * t];
          Mma(s[nt], qa[kk], *reinterpret_cast<const uint32_t*>(key),
              *reinterpret_cast<const uint32_t*>(key + 8));
        }
      }
      // Scale (to base 2), mask what lies past a row's own position, before
      // its window or past the split, and fold the tile into the running
      // max and sum.
      float tile_max[2] = {-INFINITY, -INFINITY};
      for (int nt = 0; nt < kTile / 8; ++nt) {
        for (int e = 0; e < 4; ++e) {
          const int i = e / 2, col = base + nt * 8 + 2 * t + (e & 1);
          const bool keep =
              ok[i] && col <= pos[i] && col < kv_stop && (window <= 0 || pos[i] - col < window);
          s[nt][e] = keep ? s[nt][e] * scale_log2 : -INFINITY;
          tile_max[i] = fmaxf(tile_max[i], s[nt][e]);
        }
      }
      float alpha[2], use[2];
      for (int i = 0; i < 2; ++i) {
        tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffff, tile_max[i], 1));
        tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffff, tile_max[i], 2));
        const float m_new = fmaxf(m[i], tile_max[i]);
        use[i] = m_new == -INFINITY ? 0.0f : m_new;
        alpha[i] = exp2f(m[i] - use[i]);
        m[i] = m_new;
        l[i] *= alpha[i];
      }
      for (int nt = 0; nt < kTile / 8; ++nt) {
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = exp2f(s[nt][e] - use[e / 2]);
          l[e / 2] += s[nt][e];
        }
      }
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][0] *= alpha[0];
        o[dt][1] *= alpha[0];
        o[dt][2] *= alpha[1];
        o[dt][3] *= alpha[1];
      }
      // O += P·V: P's accumulator pairs are the A fragment of k-block kk;
      // V's B fragment pairs two positions of one column.
      for (int kk = 0; kk < kTile / 16; ++kk) {
        const uint32_t pa[4] = {PackBf16(s[2 * kk][0], s[2 * kk][1]),
                                PackBf16(s[2 * kk][2], s[2 * kk][3]),
                                PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        const int r = kk * 16 + 2 * t;
        for (int dt = 0; dt < D / 8; ++dt) {
          const int col = dt * 8 + g;
          Mma(o[dt], pa, Pair(vs[r][col], vs[r + 1][col]), Pair(vs[r + 8][col], vs[r + 9][col]));
        }
      }
    }
    __syncthreads();
  }
  if (!active) return;
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
  }
  for (int i = 0; i < 2; ++i) {
    if (!ok[i]) continue;
    if (splits == 1) {
      const float inv = 1.0f / l[i];
      Bf16* row = out + static_cast<int64_t>(token[i]) * ld_out + head[i] * D;
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(row + dt * 8 + 2 * t) =
            PackBf16(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
      }
    } else {
      const int64_t r =
          (static_cast<int64_t>(split) * step.num_tokens + token[i]) * heads + head[i];
      float* row = partial + r * (D + 2);
      if (t == 0) {
        row[0] = m[i];
        row[1] = l[i];
      }
      for (int dt = 0; dt < D / 8; ++dt) {
        row[2 + dt * 8 + 2 * t] = o[dt][2 * i];
        row[3 + dt * 8 + 2 * t] = o[dt][2 * i + 1];
      }
    }
  }
}

// Joins the splits of each (token, head) row; every split wrote its max and
// sum (a split that saw no position: -inf and 0, adding nothing). One
// thread per output element.
__global__ void JoinSplitsKernel(const float* partial, int splits, int64_t rows, int head_dim,
                                 int heads, Bf16* out, int64_t ld_out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * head_dim) return;
  const int64_t r = i / head_dim, stride = rows * (head_dim + 2);
  const int d = static_cast<int>(i % head_dim);
  float top = -INFINITY;
  for (int s = 0; s < splits; ++s) top = fmaxf(top, partial[s * stride + r * (head_dim + 2)]);
  float sum = 0.0f, acc = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float* row = partial + s * stride + r * (head_dim + 2);
    if (row[1] <= 0.0f) continue;
    const float w = exp2f(row[0] - top);
    sum += row[1] * w;
    acc += row[2 + d] * w;
  }
  out[(r / heads) * ld_out + (r % heads) * head_dim + d] = ToBf16(acc / sum);
}

template <int D>
cudaError_t Launch(const Bf16* q, int64_t ld_q, const Bf16* k_cache, const Bf16* v_cache,
                   int64_t block_size, int64_t kv_heads, int64_t heads, int64_t window, float scale,
                   const DeviceStep& step, int64_t row_tiles, int64_t splits, float* partial,
                   Bf16* out, int64_t ld_out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(kv_heads * splits),
                  static_cast<unsigned>(step.num_sequences));
  constexpr float kLog2e = 1.4426950408889634f;
  FlashAttentionKernel<D><<<grid, 32 * kWarps, 0, stream>>>(
      q, ld_q, k_cache, v_cache, static_cast<int>(block_size), static_cast<int>(kv_heads),
      static_cast<int>(heads / kv_heads), static_cast<int>(window), scale * kLog2e, step,
      static_cast<int>(splits), partial, out, ld_out);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess || splits == 1) return err;
  const int64_t rows = step.num_tokens * heads;
  constexpr int kThreads = 256;
  JoinSplitsKernel<<<static_cast<unsigned>((rows * D + kThreads - 1) / kThreads), kThreads, 0,
                     stream>>>(partial, static_cast<int>(splits), rows, D, static_cast<int>(heads),
                               out, ld_out);
  return cudaGetLastError();
}

}  // namespace

bool FlashAttentionSupports(int64_t head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

cudaError_t LaunchFlashAttention(const Bf16* q, int64_t ld_q, const Bf16* k_cache,
                                 const Bf16* v_cache, int64_t block_size, int64_t kv_heads,
                                 int64_t head_dim, int64_t heads, int64_t window, float scale,
                                 DeviceStep step, int64_t row_tiles, int64_t splits, float* partial,
                                 Bf16* out, int64_t ld_out, cudaStream_t stream) {
  if (step.num_tokens == 0 || row_tiles == 0) return cudaSuccess;
  if (splits < 1 || (splits > 1 && partial == nullptr)) return cudaErrorInvalidValue;
  // One instantiation per supported head size.
  auto launch = [&](auto d) {
    return Launch<decltype(d)::value>(q, ld_q, k_cache, v_cache, block_size, kv_heads, heads,
                                      window, scale, step, row_tiles, splits, partial, out, ld_out,
                                      stream);
  };
  switch (head_dim) {
    case 16:
      return launch(std::integral_constant<int, 16>{});
    case 32:
      return launch(std::integral_constant<int, 32>{});
    case 64:
      return launch(std::integral_constant<int, 64>{});
    case 128:
      return launch(std::integral_constant<int, 128>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace shift::kernels::cuda
