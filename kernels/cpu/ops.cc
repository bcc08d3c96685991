#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/status.h"
#include "kernels/cpu/gemm.h"

// 32-byte vectors stay inside this file's functions (no vector ABI calls).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace shift::kernels::cpu {
namespace {
typedef float V8 __attribute__((vector_size(32)));
}  // namespace

void Embedding(const float* table, int64_t dim, absl::Span<const int32_t> ids, float* out) {
  for (size_t t = 0; t < ids.size(); ++t) {
    std::memcpy(out + t * dim, table + static_cast<int64_t>(ids[t]) * dim, dim * sizeof(float));
  }
}

void RmsNorm(const float* x, int64_t tokens, int64_t dim, const float* weight, float eps,
             float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * dim;
    const float mean = CanonicalDot(row, row, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = (row[i] * inv) * weight[i];
  }
}

void AddBias(float* y, int64_t tokens, int64_t n, const float* bias) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < n; ++i) y[t * n + i] = y[t * n + i] + bias[i];
  }
}

void SiluMul(const float* gate, const float* up, int64_t tokens, int64_t n, float* out) {
  for (int64_t i = 0; i < tokens * n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

Rope::Rope(int64_t head_dim, double theta, std::optional<Llama3Scaling> scaling)
    : head_dim_(head_dim), inv_freq_(head_dim / 2) {
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double f = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    if (scaling) {
      // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend
      // smoothly in between (as transformers' _compute_llama3_parameters).
      const double old_ctx = static_cast<double>(scaling->original_max_position_embeddings);
      const double low_wavelen = old_ctx / scaling->low_freq_factor;
      const double high_wavelen = old_ctx / scaling->high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / scaling->factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - scaling->low_freq_factor) /
                              (scaling->high_freq_factor - scaling->low_freq_factor);
        f = (1.0 - smooth) * f / scaling->factor + smooth * f;
      }
    }
    inv_freq_[i] = f;
  }
}

void Rope::Apply(float* x, int64_t heads, int64_t position) const {
  const int64_t half = head_dim_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(position) * inv_freq_[i];
    const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + h * head_dim_;
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c - x2 * s;
      v[i + half] = x2 * c + x1 * s;
    }
  }
}

void WriteKv(const KvView& cache, absl::Span<const int32_t> block_table, int64_t start,
             int64_t tokens, const float* k, const float* v) {
  const int64_t row = cache.kv_heads * cache.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t pos = start + t;
    const size_t block = static_cast<size_t>(pos / cache.block_size);
    SHIFT_CHECK(block < block_table.size(), "position ", pos, " needs block ", block, " of ",
                block_table.size());
    const int64_t offset = pos % cache.block_size;
    std::memcpy(cache.KeyAt(block_table[block], offset, 0), k + t * row, row * sizeof(float));
    std::memcpy(cache.ValueAt(block_table[block], offset, 0), v + t * row, row * sizeof(float));
  }
}

void AttendOne(const KvView& cache, absl::Span<const int32_t> block_table, int64_t position,
               const float* q, int64_t heads, float scale, float* out, float* scratch) {
  const int64_t d = cache.head_dim, group = heads / cache.kv_heads;
  SHIFT_CHECK(d % 8 == 0, "head_dim ", d, " is not a multiple of 8");
  SHIFT_CHECK(static_cast<size_t>(position / cache.block_size) < block_table.size(), "position ",
              position, " is past the block table (", block_table.size(), " blocks)");
  // The first position the window keeps (transformers' rule: 0 <= q - k < window).
  const int64_t first = cache.window > 0 ? std::max<int64_t>(0, position - cache.window + 1) : 0;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t kv = h / group;
    const float* qh = q + h * d;
    float max = -INFINITY;
    for (int64_t j = first; j <= position; ++j) {
      const float* key = cache.KeyAt(block_table[j / cache.block_size], j % cache.block_size, kv);
      scratch[j] = CanonicalDot(qh, key, d) * scale;
      max = std::max(max, scratch[j]);
    }
    float total = 0.0f;
    for (int64_t j = first; j <= position; ++j) {
      scratch[j] = std::exp(scratch[j] - max);
      total = total + scratch[j];
    }
    // oh[i] = Σ_j p_j · v_j[i] in position order, eight i at a time (SIMD
    // across i only, so each element's sum is the scalar one).
    for (int64_t j = first; j <= position; ++j) scratch[j] = scratch[j] / total;
    float* oh = out + h * d;
    std::fill(oh, oh + d, 0.0f);
    for (int64_t j = first; j <= position; ++j) {
      const float* value =
          cache.ValueAt(block_table[j / cache.block_size], j % cache.block_size, kv);
      const V8 p = {scratch[j], scratch[j], scratch[j], scratch[j],
                    scratch[j], scratch[j], scratch[j], scratch[j]};
      for (int64_t i = 0; i < d; i += 8) {
        V8 o, v;
        std::memcpy(&o, oh + i, sizeof(o));
        std::memcpy(&v, value + i, sizeof(v));
        o = o + p * v;
        std::memcpy(oh + i, &o, sizeof(o));
      }
    }
  }
}

float PhiloxUniform(uint64_t seed, uint64_t counter) {
  uint32_t c[4] = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0, 0};
  uint32_t k[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0];
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = static_cast<uint32_t>(p1);
    c[2] = n2;
    c[3] = static_cast<uint32_t>(p0);
    k[0] += 0x9E3779B9u;
    k[1] += 0xBB67AE85u;
  }
  return static_cast<float>(c[0] >> 8) * (1.0f / 16777216.0f);
}

int32_t Sample(const float* logits, int64_t n, const SamplingParams& params, int64_t position) {
  SHIFT_CHECK(n > 0, "no logits");
  if (params.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
  }
  auto ranks_before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = n;
  if (params.top_k > 0 && params.top_k < n) {
    keep = params.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), ranks_before);
  } else {
    std::sort(order.begin(), order.end(), ranks_before);
  }
  const float inv_t = 1.0f / params.temperature;
  const float max = logits[order[0]] * inv_t;
  std::vector<float> weights(keep);
  float total = 0.0f;
  for (int64_t i = 0; i < keep; ++i) {
    weights[i] = std::exp(logits[order[i]] * inv_t - max);
    total = total + weights[i];
  }
  if (params.top_p > 0.0f && params.top_p < 1.0f) {
    float cumulative = 0.0f;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cumulative = cumulative + weights[i];
      if (cumulative >= params.top_p * total) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0f;
    for (int64_t i = 0; i < keep; ++i) total = total + weights[i];
  }
  const float target = PhiloxUniform(params.seed, static_cast<uint64_t>(position)) * total;
  float cumulative = 0.0f;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative = cumulative + weights[i];
    if (target < cumulative) return order[i];
  }
  return order[keep - 1];
}

float LogProb(const float* logits, int64_t n, int32_t id) {
  const float max = *std::max_element(logits, logits + n);
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total = total + std::exp(logits[i] - max);
  return logits[id] - max - std::log(total);
}

}  // namespace shift::kernels::cpu
