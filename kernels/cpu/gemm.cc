#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstring>

#include "common/status.h"
#include "kernels/cpu/parallel.h"

namespace shift::kernels::cpu {
namespace {

// Eight floats; plain vector arithmetic (no FMA: -ffp-contract=off), so the
// same element gets the same mul and add whatever the instruction set.
typedef float V8 __attribute__((vector_size(32)));

// Vectors go through pointers and references, never by value: a 32-byte
// vector passed or returned by value uses an ABI that depends on the
// instruction set and changed across GCC versions (-Wpsabi).
__attribute__((always_inline)) inline void Load(const float* p, V8* v) {
  std::memcpy(v, p, sizeof(*v));
}
__attribute__((always_inline)) inline void Store(float* p, const V8& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Joins `count` (1, 2, 4 or 8) group sums by the canonical tree into *sum
// (an output pointer, not a return value: T may be V8).
template <typename T>
__attribute__((always_inline)) inline void Tree(const T* g, int count, T* sum) {
  switch (count) {
    case 1:
      *sum = g[0];
      break;
    case 2:
      *sum = g[0] + g[1];
      break;
    case 4:
      *sum = (g[0] + g[1]) + (g[2] + g[3]);
      break;
    default:
      *sum = ((g[0] + g[1]) + (g[2] + g[3])) + ((g[4] + g[5]) + (g[6] + g[7]));
      break;
  }
}

// Rows [0, R) of x against one panel over `count` groups of `len` K each:
// out[r][0..16). Compiled for several instruction sets, chosen at load.
template <int R>
__attribute__((always_inline)) inline void Tile(const float* x, int64_t ldx, const float* panel,
                                                int64_t len, int count, float* out, int64_t ldo) {
  V8 parts[kReductionGroups][R][2];
  for (int g = 0; g < count; ++g) {
    V8 acc[R][2] = {};
    const float* xg = x + g * len;
    const float* pg = panel + g * len * kPanelWidth;
    for (int64_t k = 0; k < len; ++k) {
      V8 w0, w1;
      Load(pg + k * kPanelWidth, &w0);
      Load(pg + k * kPanelWidth + 8, &w1);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float a = xg[r * ldx + k];
        const V8 av = {a, a, a, a, a, a, a, a};
        acc[r][0] = acc[r][0] + av * w0;
        acc[r][1] = acc[r][1] + av * w1;
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      parts[g][r][0] = acc[r][0];
      parts[g][r][1] = acc[r][1];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < 2; ++h) {
      V8 g[kReductionGroups];
      for (int i = 0; i < count; ++i) g[i] = parts[i][r][h];
      V8 sum;
      Tree(g, count, &sum);
      Store(out + r * ldo + 8 * h, sum);
    }
  }
}

__attribute__((target_clones("avx2", "default"))) void Tile4(const float* x, int64_t ldx,
                                                             const float* panel, int64_t len,
                                                             int count, float* out, int64_t ldo) {
  Tile<4>(x, ldx, panel, len, count, out, ldo);
}

__attribute__((target_clones("avx2", "default"))) void Tile1(const float* x, int64_t ldx,
                                                             const float* panel, int64_t len,
                                                             int count, float* out, int64_t ldo) {
  Tile<1>(x, ldx, panel, len, count, out, ldo);
}

// Panels [p_begin, p_end) of the range for all m rows.
void GemmPanels(const float* x, int64_t m, int64_t ldx, const PackedWeight& w,
                const GemmRange& range, int64_t n_end, int64_t p_begin, int64_t p_end, float* y,
                int64_t ldy) {
  const int64_t len = w.k() / w.groups();
  float tile[4 * kPanelWidth];
  for (int64_t p = p_begin; p < p_end; ++p) {
    const float* panel = w.panel(p) + range.group_begin * len * kPanelWidth;
    const int64_t col = p * kPanelWidth;
    const int64_t width = std::min(kPanelWidth, n_end - col);
    float* y_col = y + (col - range.n_begin);
    for (int64_t r = 0; r < m;) {
      const int rows = m - r >= 4 ? 4 : 1;
      if (rows == 4) {
        Tile4(x + r * ldx, ldx, panel, len, range.group_count, tile, kPanelWidth);
      } else {
        Tile1(x + r * ldx, ldx, panel, len, range.group_count, tile, kPanelWidth);
      }
      for (int i = 0; i < rows; ++i) {
        std::memcpy(y_col + (r + i) * ldy, tile + i * kPanelWidth, width * sizeof(float));
      }
      r += rows;
    }
  }
}

}  // namespace

PackedWeight PackedWeight::Pack(const float* w, int64_t n, int64_t k, int groups) {
  SHIFT_CHECK(groups >= 1 && k % groups == 0, "K = ", k, " is not a multiple of ", groups);
  PackedWeight packed;
  packed.n_ = n;
  packed.k_ = k;
  packed.groups_ = groups;
  packed.data_.assign(packed.num_panels() * k * kPanelWidth, 0.0f);
  for (int64_t row = 0; row < n; ++row) {
    float* panel = packed.data_.data() + (row / kPanelWidth) * k * kPanelWidth;
    const int64_t j = row % kPanelWidth;
    for (int64_t c = 0; c < k; ++c) panel[c * kPanelWidth + j] = w[row * k + c];
  }
  return packed;
}

void Gemm(const float* x, int64_t m, int64_t ldx, const PackedWeight& w, const GemmRange& range,
          float* y, int64_t ldy, int threads) {
  const int64_t n_end = range.n_end < 0 ? w.n() : range.n_end;
  SHIFT_CHECK(range.n_begin % kPanelWidth == 0 && range.n_begin <= n_end && n_end <= w.n(),
              "columns [", range.n_begin, ", ", n_end, ") of ", w.n());
  SHIFT_CHECK((range.group_count == 1 || range.group_count == 2 || range.group_count == 4 ||
               range.group_count == 8) &&
                  range.group_begin % range.group_count == 0 &&
                  range.group_begin + range.group_count <= w.groups(),
              "groups ", range.group_begin, " + ", range.group_count, " of ", w.groups());
  if (m == 0 || n_end == range.n_begin) return;
  const int64_t p_begin = range.n_begin / kPanelWidth;
  const int64_t p_end = (n_end + kPanelWidth - 1) / kPanelWidth;
  const int64_t panels = p_end - p_begin;
  // Threads only pay off for enough work (a thread start costs ~20 µs).
  const int64_t flops = 2 * m * (n_end - range.n_begin) * w.k() / w.groups() * range.group_count;
  const int64_t workers = std::min<int64_t>({threads, panels, std::max<int64_t>(1, flops >> 21)});
  ParallelFor(panels, workers, [&](int64_t a, int64_t b) {
    GemmPanels(x, m, ldx, w, range, n_end, p_begin + a, p_begin + b, y, ldy);
  });
}

float JoinSubtrees(const float* values, int parts) {
  float sum;
  Tree(values, parts, &sum);
  return sum;
}

float CanonicalDot(const float* a, const float* b, int64_t k) {
  SHIFT_CHECK(k % kReductionGroups == 0, "K = ", k);
  const int64_t len = k / kReductionGroups;
  float g[kReductionGroups];
  for (int i = 0; i < kReductionGroups; ++i) {
    float acc = 0.0f;
    for (int64_t j = i * len; j < (i + 1) * len; ++j) acc = acc + a[j] * b[j];
    g[i] = acc;
  }
  float sum;
  Tree(g, kReductionGroups, &sum);
  return sum;
}

}  // namespace shift::kernels::cpu
