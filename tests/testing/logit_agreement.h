// How closely teacher-forced logits follow a reference's: the normalised
// mean squared error, and top-1 agreement over every row and over the
// decisive ones. A random model's logits are nearly flat, so some rows' top
// two lie closer than the tested precision's error: a differing top-1 there
// is a tie, not a fault. A row is decisive when the reference's top two lie
// further apart than 4x the RMS logit difference.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace shift::testing {

struct LogitAgreement {
  double nmse = 0;
  double top1 = 1;           // over every row
  double decisive_top1 = 1;  // over the decisive rows
  int decisive = 0;
  size_t rows = 0;
};

// `want` and `got` hold the same rows, each row the same length.
inline LogitAgreement CompareLogits(const std::vector<std::vector<float>>& want,
                                    const std::vector<std::vector<float>>& got) {
  LogitAgreement a;
  a.rows = std::min(want.size(), got.size());
  double err = 0, ref = 0;
  size_t count = 0;
  for (size_t i = 0; i < a.rows; ++i) {
    for (size_t v = 0; v < want[i].size() && v < got[i].size(); ++v) {
      err += (got[i][v] - want[i][v]) * (got[i][v] - want[i][v]);
      ref += want[i][v] * want[i][v];
    }
    count += want[i].size();
  }
  if (a.rows == 0) return a;
  const double rms = std::sqrt(err / static_cast<double>(std::max<size_t>(count, 1)));
  int agree = 0, decisive_agree = 0;
  for (size_t i = 0; i < a.rows; ++i) {
    const bool same = std::max_element(want[i].begin(), want[i].end()) - want[i].begin() ==
                      std::max_element(got[i].begin(), got[i].end()) - got[i].begin();
    std::vector<float> sorted = want[i];
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    const bool decisive = sorted[0] - sorted[1] > 4 * rms;
    agree += same;
    a.decisive += decisive;
    decisive_agree += decisive && same;
  }
  a.nmse = ref > 0 ? err / ref : err;
  a.top1 = static_cast<double>(agree) / static_cast<double>(a.rows);
  a.decisive_top1 = a.decisive > 0 ? static_cast<double>(decisive_agree) / a.decisive : 1.0;
  return a;
}

}  // namespace shift::testing
