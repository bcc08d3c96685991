#include "common/detokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/unicode.h"

namespace shift {

absl::StatusOr<std::string> IncrementalDetokenizer::Append(int32_t id) {
  const auto bytes = tokenizer_.TokenBytes(id);
  if (!bytes) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
  }
  if (skip_special_ && tokenizer_.IsSpecial(id)) return std::string();
  pending_.append(*bytes);
  if (drop_space_ && !pending_.empty()) {
    if (pending_[0] == ' ') pending_.erase(0, 1);
    drop_space_ = false;
  }
  std::string out;
  std::string_view rest = pending_;
  while (!rest.empty()) {
    const Utf8Step step = DecodeUtf8(rest);
    if (step.kind == Utf8Step::kIncomplete) break;
    if (step.kind == Utf8Step::kOk) {
      out.append(rest.substr(0, step.length));
    } else {
      out.append(kReplacementUtf8);
    }
    rest.remove_prefix(step.length);
  }
  pending_.erase(0, pending_.size() - rest.size());
  return out;
}

std::string IncrementalDetokenizer::Finish() {
  // Append leaves at most one incomplete sequence behind.
  std::string out = pending_.empty() ? std::string() : std::string(kReplacementUtf8);
  pending_.clear();
  drop_space_ = false;
  return out;
}

}  // namespace shift
