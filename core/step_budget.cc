#include "core/step_budget.h"

#include <algorithm>

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
  }
  return "unknown";
}

StepShape ShapeWithPrefill(const BudgetQuestion& q, int64_t prefill) {
  StepShape s = q.decodes;
  for (const PrefillCandidate& c : q.prefills) {
    if (prefill <= 0 || s.num_sequences >= q.max_sequences) break;
    const int64_t n = std::min(c.tokens, prefill);
    if (n <= 0) continue;
    s.num_tokens += n;
    s.num_sequences += 1;
    s.attention += n * c.start_position + n * (n + 1) / 2;
    s.max_context = std::max(s.max_context, c.start_position + n);
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
  if (choice.prefill_tokens < std::min(q.min_prefill, most)) {
    choice.prefill_tokens = std::min(q.min_prefill, most);
    choice.reason = BudgetReason::kStarvation;
    if (const auto p = predict(ShapeWithPrefill(q, choice.prefill_tokens))) {
      choice.mode = p->first;
      choice.predicted_seconds = p->second;
    }
  }
  return choice;
}

absl::Status ValidateTpotTarget(double milliseconds) {
  if (milliseconds == 0 || (milliseconds >= kMinTpotTargetMs && milliseconds <= kMaxTpotTargetMs)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--tpot_slo_ms must be 0 (off) or in [",
                                                 kMinTpotTargetMs, ", ", kMaxTpotTargetMs,
                                                 "], got ", milliseconds));
}

}  // namespace shift
