// The CPU GEMM against a naive loop in the canonical order (bit for bit) and
// a double-precision dot (close), and its invariances: a row's bits do not
// depend on M, on the column range, on threads, and TP subtrees joined by the
// tree equal the whole.
#include "kernels/cpu/gemm.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace shift::kernels::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

struct Shape {
  int64_t m, n, k;
};

class GemmTest : public ::testing::TestWithParam<Shape> {};

TEST_P(GemmTest, MatchesNaiveCanonicalLoopBitForBit) {
  const auto [m, n, k] = GetParam();
  const auto x = Random(m * k, 1), w = Random(n * k, 2);
  const PackedWeight packed = PackedWeight::Pack(w.data(), n, k);
  std::vector<float> y(m * n, NAN);
  Gemm(x.data(), m, k, packed, {}, y.data(), n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float expected = CanonicalDot(&x[i * k], &w[j * k], k);
      ASSERT_TRUE(SameBits(y[i * n + j], expected))
          << i << "," << j << ": " << y[i * n + j] << " vs " << expected;
      double exact = 0;
      for (int64_t c = 0; c < k; ++c) exact += static_cast<double>(x[i * k + c]) * w[j * k + c];
      ASSERT_NEAR(y[i * n + j], exact, 1e-5 * k) << i << "," << j;
    }
  }
}

TEST_P(GemmTest, RowsDoNotDependOnBatchColumnsOrThreads) {
  const auto [m, n, k] = GetParam();
  const auto x = Random(m * k, 3), w = Random(n * k, 4);
  const PackedWeight packed = PackedWeight::Pack(w.data(), n, k);
  std::vector<float> full(m * n);
  Gemm(x.data(), m, k, packed, {}, full.data(), n);
  // One row at a time.
  for (int64_t i = 0; i < m; ++i) {
    std::vector<float> row(n);
    Gemm(&x[i * k], 1, k, packed, {}, row.data(), n);
    for (int64_t j = 0; j < n; ++j) ASSERT_TRUE(SameBits(row[j], full[i * n + j])) << i << "," << j;
  }
  // A column range (a TP rank's slice), with two threads.
  if (n > kPanelWidth) {
    GemmRange range;
    range.n_begin = kPanelWidth;
    range.n_end = n;
    std::vector<float> part(m * (n - kPanelWidth));
    Gemm(x.data(), m, k, packed, range, part.data(), n - kPanelWidth, /*threads=*/2);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = kPanelWidth; j < n; ++j) {
        ASSERT_TRUE(SameBits(part[i * (n - kPanelWidth) + j - kPanelWidth], full[i * n + j]));
      }
    }
  }
}

TEST_P(GemmTest, JoinedSubtreesEqualTheWholeReduction) {
  const auto [m, n, k] = GetParam();
  const auto x = Random(m * k, 5), w = Random(n * k, 6);
  const PackedWeight packed = PackedWeight::Pack(w.data(), n, k);
  std::vector<float> full(m * n);
  Gemm(x.data(), m, k, packed, {}, full.data(), n);
  for (int parts : {1, 2, 4, 8}) {
    // Rank r owns groups [r·8/P, (r+1)·8/P) and the matching K columns of x.
    std::vector<std::vector<float>> partial(parts, std::vector<float>(m * n));
    for (int r = 0; r < parts; ++r) {
      GemmRange range;
      range.group_count = kReductionGroups / parts;
      range.group_begin = r * range.group_count;
      const int64_t k_offset = k / parts * r;
      Gemm(x.data() + k_offset, m, k, packed, range, partial[r].data(), n);
    }
    for (int64_t e = 0; e < m * n; ++e) {
      std::vector<float> values(parts);
      for (int r = 0; r < parts; ++r) values[r] = partial[r][e];
      ASSERT_TRUE(SameBits(JoinSubtrees(values.data(), parts), full[e])) << parts << " " << e;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest,
                         ::testing::Values(Shape{1, 1, 8}, Shape{1, 37, 64}, Shape{3, 16, 136},
                                           Shape{5, 33, 200}, Shape{4, 64, 8}, Shape{17, 100, 256},
                                           Shape{9, 129, 1000}),
                         [](const auto& info) {
                           return absl::StrCat("m", info.param.m, "n", info.param.n, "k",
                                               info.param.k);
                         });

}  // namespace
}  // namespace shift::kernels::cpu
