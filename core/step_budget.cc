#include "core/step_budget.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace shift {
namespace {

// Budgets tried first: the cap split in this many steps, then a bisection
// between the largest that fits and the next.
constexpr int64_t kGrid = 64;

}  // namespace

const char* BudgetReasonName(BudgetReason reason) {
  switch (reason) {
    case BudgetReason::kCap:
      return "cap";
    case BudgetReason::kTarget:
      return "target";
    case BudgetReason::kTargetUnmet:
      return "target_unmet";
    case BudgetReason::kStarvation:
      return "starvation";
    case BudgetReason::kUnpredicted:
      return "unpredicted";
    case BudgetReason::kTtft:
      return "ttft";
  }
  return "unknown";
}

StepShape ShapeWithPrefill(const BudgetQuestion& q, int64_t prefill) {
  StepShape s = q.decodes;
  for (const PrefillCandidate& c : q.prefills) {
    if (prefill <= 0 || s.num_sequences >= q.max_sequences) break;
    const int64_t n = std::min(c.tokens, prefill);
    if (n <= 0) continue;
    s.AddSequence(c.start_position, n);
    prefill -= n;
  }
  return s;
}

BudgetChoice ChooseBudget(const BudgetQuestion& q, const ModePredictor& predict) {
  BudgetChoice choice;
  // What the prefills could take at most: the cap, their tokens, the
  // sequences left.
  int64_t wanted = 0;
  int64_t seqs = q.decodes.num_sequences;
  for (const PrefillCandidate& c : q.prefills) {
    if (seqs++ >= q.max_sequences) break;
    wanted += std::max<int64_t>(c.tokens, 0);
  }
  const int64_t most = std::max<int64_t>(std::min(q.max_tokens - q.decodes.num_tokens, wanted), 0);
  choice.prefill_tokens = most;
  if (most == 0 || q.seconds == std::numeric_limits<double>::infinity()) return choice;
  const auto base = predict(q.decodes);
  if (!base) {
    choice.reason = BudgetReason::kUnpredicted;
    return choice;
  }
  // The predicted time of `prefill` tokens, and whether it fits.
  auto fits = [&](int64_t prefill, BudgetChoice* out) {
    const auto p = prefill == 0 ? base : predict(ShapeWithPrefill(q, prefill));
    if (!p || p->second > q.seconds) return false;
    if (out != nullptr) {
      out->prefill_tokens = prefill;
      out->mode = p->first;
      out->predicted_seconds = p->second;
    }
    return true;
  };
  if (fits(most, &choice)) {
    choice.reason = BudgetReason::kCap;
    return choice;
  }
  // The largest point of the grid that fits, then bisection up to the next.
  int64_t low = -1, high = most;
  for (int64_t k = kGrid - 1; k >= 0; --k) {
    const int64_t b = most * k / kGrid;
    if (fits(b, nullptr)) {
      low = b;
      break;
    }
    high = b;
  }
  if (low < 0) {
    // Not even the decodes alone.
    choice.prefill_tokens = 0;
    choice.reason = BudgetReason::kTargetUnmet;
    choice.mode = base->first;
    choice.predicted_seconds = base->second;
  } else {
    while (high - low > 1) {
      const int64_t mid = low + (high - low) / 2;
      (fits(mid, nullptr) ? low : high) = mid;
    }
    fits(low, &choice);
    choice.reason = BudgetReason::kTarget;
  }
  // Raises the budget to `prefill` for `reason`, predicting it again.
  auto raise = [&](int64_t prefill, BudgetReason reason) {
    choice.prefill_tokens = prefill;
    choice.reason = reason;
    if (const auto p = predict(ShapeWithPrefill(q, prefill))) {
      choice.mode = p->first;
      choice.predicted_seconds = p->second;
    }
  };
  if (choice.prefill_tokens < std::min(q.min_prefill, most)) {
    raise(std::min(q.min_prefill, most), BudgetReason::kStarvation);
  }
  // The time-to-first-token guard: in order, a prompt completes once the
  // tokens before it and its own are computed; at steps of the predicted
  // time, the steps left before its target must take them all. Larger steps
  // are longer, so the need is computed again at the budget it raised to.
  for (int round = 0; round < 4; ++round) {
    const double step = std::max(choice.predicted_seconds, 1e-6);
    int64_t need = 0, through = 0;
    for (const PrefillCandidate& c : q.prefills) {
      through += std::max<int64_t>(c.tokens, 0);
      if (c.ttft_left == std::numeric_limits<double>::infinity()) continue;
      const double steps = std::max(1.0, std::floor(c.ttft_left / step));
      need = std::max(need, static_cast<int64_t>(std::ceil(static_cast<double>(through) / steps)));
    }
    need = std::min(need, most);
    if (need <= choice.prefill_tokens) break;
    raise(need, BudgetReason::kTtft);
  }
  return choice;
}

absl::Status ValidateLatencyTarget(double milliseconds, absl::string_view what) {
  if (milliseconds == 0 || (milliseconds >= kMinTargetMs && milliseconds <= kMaxTargetMs)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " must be 0 (none) or in [", kMinTargetMs,
                                                 ", ", kMaxTargetMs, "], got ", milliseconds));
}

}  // namespace shift
