#include "sim/fit.h"

#include <algorithm>
#include <cmath>

namespace shift::sim {
namespace {

// Solves the unconstrained least squares on the columns in `passive`
// (others 0) through the normal equations, columns scaled to unit norm;
// Gaussian elimination with partial pivoting, a tiny ridge for
// collinear columns.
std::vector<double> SolvePassive(const std::vector<std::vector<double>>& a,
                                 const std::vector<double>& b, const std::vector<bool>& passive) {
  const size_t n = passive.size();
  std::vector<size_t> cols;
  for (size_t j = 0; j < n; ++j)
    if (passive[j]) cols.push_back(j);
  const size_t k = cols.size();
  std::vector<double> scale(k, 0);
  for (size_t c = 0; c < k; ++c) {
    for (const auto& row : a) scale[c] += row[cols[c]] * row[cols[c]];
    scale[c] = scale[c] > 0 ? 1 / std::sqrt(scale[c]) : 0;
  }
  std::vector<std::vector<double>> m(k, std::vector<double>(k + 1, 0));
  for (size_t r = 0; r < a.size(); ++r) {
    for (size_t i = 0; i < k; ++i) {
      const double ai = a[r][cols[i]] * scale[i];
      for (size_t j = 0; j < k; ++j) m[i][j] += ai * a[r][cols[j]] * scale[j];
      m[i][k] += ai * b[r];
    }
  }
  for (size_t i = 0; i < k; ++i) m[i][i] += 1e-12;
  for (size_t i = 0; i < k; ++i) {
    size_t pivot = i;
    for (size_t r = i + 1; r < k; ++r)
      if (std::fabs(m[r][i]) > std::fabs(m[pivot][i])) pivot = r;
    std::swap(m[i], m[pivot]);
    if (m[i][i] == 0) continue;
    for (size_t r = 0; r < k; ++r) {
      if (r == i) continue;
      const double f = m[r][i] / m[i][i];
      for (size_t j = i; j <= k; ++j) m[r][j] -= f * m[i][j];
    }
  }
  std::vector<double> x(n, 0);
  for (size_t i = 0; i < k; ++i) x[cols[i]] = m[i][i] != 0 ? m[i][k] / m[i][i] * scale[i] : 0;
  return x;
}

}  // namespace

std::vector<double> FitNonNegative(const std::vector<std::vector<double>>& rows,
                                   const std::vector<double>& y, bool relative) {
  if (rows.empty()) return {};
  const size_t n = rows[0].size();
  // Weighted system: each row and target scaled by sqrt(w).
  std::vector<std::vector<double>> a = rows;
  std::vector<double> b = y;
  for (size_t r = 0; r < a.size(); ++r) {
    const double w = relative && y[r] != 0 ? 1 / std::fabs(y[r]) : 1;
    for (double& v : a[r]) v *= w;
    b[r] *= w;
  }
  std::vector<bool> passive(n, false);
  std::vector<double> x(n, 0);
  auto gradient = [&](const std::vector<double>& at) {
    std::vector<double> g(n, 0);
    for (size_t r = 0; r < a.size(); ++r) {
      double residual = b[r];
      for (size_t j = 0; j < n; ++j) residual -= a[r][j] * at[j];
      for (size_t j = 0; j < n; ++j) g[j] += a[r][j] * residual;
    }
    return g;
  };
  for (int outer = 0; outer < 3 * static_cast<int>(n) + 10; ++outer) {
    const std::vector<double> g = gradient(x);
    size_t best = n;
    double best_g = 1e-12;
    for (size_t j = 0; j < n; ++j) {
      // Scale-free test: the gradient against the column's norm.
      double norm = 0;
      for (const auto& row : a) norm += row[j] * row[j];
      if (passive[j] || norm == 0) continue;
      const double gj = g[j] / std::sqrt(norm);
      if (gj > best_g) best_g = gj, best = j;
    }
    if (best == n) break;
    passive[best] = true;
    for (int inner = 0; inner < 3 * static_cast<int>(n) + 10; ++inner) {
      const std::vector<double> z = SolvePassive(a, b, passive);
      bool feasible = true;
      for (size_t j = 0; j < n; ++j)
        if (passive[j] && z[j] <= 0) feasible = false;
      if (feasible) {
        x = z;
        break;
      }
      // Step from x towards z as far as stays feasible; drop the columns
      // that reach zero.
      double alpha = 1;
      for (size_t j = 0; j < n; ++j) {
        if (passive[j] && z[j] <= 0) alpha = std::min(alpha, x[j] / (x[j] - z[j]));
      }
      for (size_t j = 0; j < n; ++j) {
        if (!passive[j]) continue;
        x[j] += alpha * (z[j] - x[j]);
        if (x[j] <= 1e-300) {
          x[j] = 0;
          passive[j] = false;
        }
      }
    }
  }
  return x;
}

}  // namespace shift::sim
