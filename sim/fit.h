// Least squares with non-negative coefficients (Lawson and Hanson), for the
// small fits of calibration: a handful of coefficients, each a cost per unit
// of something, so none may be negative.
#pragma once

#include <vector>

namespace shift::sim {

// The x >= 0 minimising Σ_i w_i (rows[i]·x − y[i])², with w_i = 1, or
// 1/y[i]² when `relative` (errors as fractions of each target). Columns that
// are all zero get 0.
std::vector<double> FitNonNegative(const std::vector<std::vector<double>>& rows,
                                   const std::vector<double>& y, bool relative);

}  // namespace shift::sim
