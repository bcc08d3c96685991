// The CPU layer kernels against naive loops (in double where rounding
// differs), on odd sizes, plus the invariances the engine relies on.
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"

namespace shift::kernels::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

TEST(CpuOpsTest, EmbeddingCopiesRows) {
  const auto table = Random(7 * 24, 1);
  const std::vector<int32_t> ids = {6, 0, 3, 3, 5};
  std::vector<float> out(ids.size() * 24);
  Embedding(table.data(), 24, ids, out.data());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < 24; ++i) EXPECT_EQ(out[t * 24 + i], table[ids[t] * 24 + i]);
  }
}

TEST(CpuOpsTest, RmsNormMatchesNaive) {
  const int64_t tokens = 5, dim = 40;
  const auto x = Random(tokens * dim, 2, 3.0f), w = Random(dim, 3);
  std::vector<float> out(tokens * dim);
  RmsNorm(x.data(), tokens, dim, w.data(), 1e-5f, out.data());
  for (int64_t t = 0; t < tokens; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(out[t * dim + i], x[t * dim + i] * inv * w[i], 1e-5) << t << "," << i;
    }
  }
}

TEST(CpuOpsTest, BiasAndSiluMulMatchNaive) {
  const int64_t tokens = 3, n = 13;
  auto y = Random(tokens * n, 4);
  const auto original = y, bias = Random(n, 5), gate = Random(tokens * n, 6, 6.0f),
             up = Random(tokens * n, 7);
  AddBias(y.data(), tokens, n, bias.data());
  std::vector<float> out(tokens * n);
  SiluMul(gate.data(), up.data(), tokens, n, out.data());
  for (int64_t i = 0; i < tokens * n; ++i) {
    EXPECT_EQ(y[i], original[i] + bias[i % n]);
    const double g = gate[i];
    EXPECT_NEAR(out[i], g / (1.0 + std::exp(-g)) * up[i], 1e-6);
  }
}

TEST(CpuOpsTest, RopeRotatesPairsHalfAnApart) {
  const int64_t d = 16, heads = 3;
  const Rope rope(d, 10000.0, std::nullopt);
  auto x = Random(heads * d, 8);
  const auto original = x;
  rope.Apply(x.data(), heads, 37);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < d / 2; ++i) {
      const double angle = 37.0 / std::pow(10000.0, 2.0 * i / d);
      const double x1 = original[h * d + i], x2 = original[h * d + i + d / 2];
      EXPECT_NEAR(x[h * d + i], x1 * std::cos(angle) - x2 * std::sin(angle), 1e-5);
      EXPECT_NEAR(x[h * d + i + d / 2], x2 * std::cos(angle) + x1 * std::sin(angle), 1e-5);
    }
  }
}

TEST(CpuOpsTest, RopeLlama3ScalingFollowsTransformers) {
  // Llama 3.1: head_dim 128, theta 500000, factor 8, band [1, 4], context 8192.
  const Rope rope(128, 500000.0, Llama3Scaling{8.0, 1.0, 4.0, 8192});
  const Rope plain(128, 500000.0, std::nullopt);
  const auto& f = rope.inv_freq();
  const auto& p = plain.inv_freq();
  for (size_t i = 0; i < f.size(); ++i) {
    const double wavelen = 2 * M_PI / p[i];
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_EQ(f[i], p[i]) << i;  // high frequencies kept
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(f[i], p[i] / 8.0) << i;  // low frequencies divided
    } else {
      EXPECT_LT(f[i], p[i]) << i;  // blended in between
      EXPECT_GT(f[i], p[i] / 8.0) << i;
    }
  }
  EXPECT_EQ(f[0], 1.0);
  EXPECT_DOUBLE_EQ(f[63], p[63] / 8.0);
}

// Naive attention over contiguous K/V [positions][kv_heads][d], in double,
// over positions first..position.
std::vector<double> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int64_t position, int64_t heads,
                                   int64_t kv_heads, int64_t d, double scale, int64_t first = 0) {
  std::vector<double> out(heads * d, 0.0);
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t kv = h / (heads / kv_heads);
    std::vector<double> s(position + 1, -INFINITY);
    double max = -INFINITY, total = 0;
    for (int64_t j = first; j <= position; ++j) {
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += q[h * d + i] * k[(j * kv_heads + kv) * d + i];
      s[j] = dot * scale;
      max = std::max(max, s[j]);
    }
    for (double& x : s) total += (x = std::exp(x - max));
    for (int64_t j = first; j <= position; ++j) {
      for (int64_t i = 0; i < d; ++i)
        out[h * d + i] += s[j] / total * v[(j * kv_heads + kv) * d + i];
    }
  }
  return out;
}

TEST(CpuOpsTest, PagedAttentionMatchesNaiveAndIgnoresLaterPositions) {
  const int64_t heads = 4, kv_heads = 2, d = 16, block_size = 4, positions = 11;
  const std::vector<int32_t> table = {5, 2, 7};  // scattered blocks
  std::vector<float> k_cache(8 * block_size * kv_heads * d, NAN), v_cache = k_cache;
  const KvView cache{k_cache.data(), v_cache.data(), block_size, kv_heads, d};
  const auto k = Random(positions * kv_heads * d, 9), v = Random(positions * kv_heads * d, 10);
  const auto q = Random(heads * d, 11);
  const float scale = 1.0f / 4.0f;
  std::vector<float> scratch(positions), out(heads * d);

  // Write in two chunks (7 then 3 positions), attend at position 6 between.
  WriteKv(cache, table, 0, 7, k.data(), v.data());
  AttendOne(cache, table, 6, q.data(), heads, scale, out.data(), scratch.data());
  const auto at6 = out;
  auto naive = NaiveAttention(q, k, v, 6, heads, kv_heads, d, scale);
  for (int64_t i = 0; i < heads * d; ++i) EXPECT_NEAR(out[i], naive[i], 1e-5) << i;

  WriteKv(cache, table, 7, 4, k.data() + 7 * kv_heads * d, v.data() + 7 * kv_heads * d);
  AttendOne(cache, table, 6, q.data(), heads, scale, out.data(), scratch.data());
  EXPECT_EQ(std::memcmp(out.data(), at6.data(), out.size() * sizeof(float)), 0);
  AttendOne(cache, table, 10, q.data(), heads, scale, out.data(), scratch.data());
  naive = NaiveAttention(q, k, v, 10, heads, kv_heads, d, scale);
  for (int64_t i = 0; i < heads * d; ++i) EXPECT_NEAR(out[i], naive[i], 1e-5) << i;
}

// A sliding window of w: the query at p sees positions p - w + 1 .. p only
// (and all of them while p < w), whatever the cache holds before.
TEST(CpuOpsTest, PagedAttentionWithAWindowSeesItsLastPositionsOnly) {
  const int64_t heads = 4, kv_heads = 2, d = 16, block_size = 4, positions = 11, window = 5;
  const std::vector<int32_t> table = {5, 2, 7};
  std::vector<float> k_cache(8 * block_size * kv_heads * d, 0.0f), v_cache = k_cache;
  const auto k = Random(positions * kv_heads * d, 12), v = Random(positions * kv_heads * d, 13);
  const auto q = Random(heads * d, 14);
  const KvView full{k_cache.data(), v_cache.data(), block_size, kv_heads, d};
  KvView windowed = full;
  windowed.window = window;
  WriteKv(full, table, 0, positions, k.data(), v.data());
  std::vector<float> scratch(positions), out(heads * d), unwindowed(heads * d);
  for (int64_t p : {int64_t{3}, int64_t{4}, int64_t{5}, int64_t{10}}) {
    AttendOne(windowed, table, p, q.data(), heads, 0.25f, out.data(), scratch.data());
    const auto naive =
        NaiveAttention(q, k, v, p, heads, kv_heads, d, 0.25, std::max<int64_t>(0, p - window + 1));
    for (int64_t i = 0; i < heads * d; ++i) EXPECT_NEAR(out[i], naive[i], 1e-5) << p << " " << i;
    AttendOne(full, table, p, q.data(), heads, 0.25f, unwindowed.data(), scratch.data());
    const bool same = std::memcmp(out.data(), unwindowed.data(), out.size() * sizeof(float)) == 0;
    EXPECT_EQ(same, p < window) << "position " << p;
  }
}

TEST(CpuOpsTest, PhiloxMatchesKnownAnswer) {
  // Random123's philox4x32-10 known answer for counter 0, key 0: 0x6627e8d5...
  EXPECT_EQ(PhiloxUniform(0, 0), static_cast<float>(0x6627e8d5u >> 8) / 16777216.0f);
  EXPECT_NE(PhiloxUniform(0, 1), PhiloxUniform(0, 0));
  EXPECT_NE(PhiloxUniform(1, 0), PhiloxUniform(0, 0));
}

TEST(CpuOpsTest, GreedyAndTiesPickTheLowestId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(Sample(logits.data(), 4, {}, 0), 1);
  SamplingParams top1;
  top1.temperature = 1.0f;
  top1.top_k = 1;
  EXPECT_EQ(Sample(logits.data(), 4, top1, 5), 1);
  const std::vector<float> flat(6, 0.0f);
  SamplingParams top2;
  top2.temperature = 1.0f;
  top2.top_k = 2;
  for (int64_t pos = 0; pos < 200; ++pos) EXPECT_LT(Sample(flat.data(), 6, top2, pos), 2);
}

TEST(CpuOpsTest, SamplingFollowsTheDistributionAndIsReproducible) {
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -30.0f};
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 1234;
  std::map<int32_t, int> counts;
  const int draws = 40000;
  for (int64_t pos = 0; pos < draws; ++pos) ++counts[Sample(logits.data(), 4, params, pos)];
  const double z = std::exp(1.0) + 1.0 + std::exp(2.0);
  EXPECT_NEAR(counts[0] / static_cast<double>(draws), std::exp(1.0) / z, 0.01);
  EXPECT_NEAR(counts[1] / static_cast<double>(draws), 1.0 / z, 0.01);
  EXPECT_NEAR(counts[2] / static_cast<double>(draws), std::exp(2.0) / z, 0.01);
  EXPECT_EQ(counts[3], 0);
  // top_p keeps only the smallest set reaching p: here {2} then {2, 0}.
  params.top_p = 0.5f;
  for (int64_t pos = 0; pos < 500; ++pos) EXPECT_EQ(Sample(logits.data(), 4, params, pos), 2);
  params.top_p = 0.9f;
  for (int64_t pos = 0; pos < 500; ++pos) EXPECT_NE(Sample(logits.data(), 4, params, pos), 1);
  // Same seed and position, same token.
  params.top_p = 1.0f;
  EXPECT_EQ(Sample(logits.data(), 4, params, 77), Sample(logits.data(), 4, params, 77));
  EXPECT_NEAR(LogProb(logits.data(), 4, 2), std::log(std::exp(2.0) / (z + std::exp(-30.0))), 1e-6);
}

}  // namespace
}  // namespace shift::kernels::cpu
