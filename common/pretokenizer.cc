#include "common/pretokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace shift {
namespace {

constexpr int kMaxSequenceDepth = 32;

// The pattern ByteLevel applies when use_regex is true (GPT-2's).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A part of a piece: byte range and whether the split pattern matched it.
struct Part {
  size_t begin, end;
  bool is_match;
};

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& node) {
  PreTokenizer pre;
  try {
    SHIFT_RETURN_IF_ERROR(AddSteps(node, &pre.steps_));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed pre_tokenizer: ", e.what()));
  }
  return pre;
}

// Flattens `node` into steps. May throw nlohmann::json::exception on a
// malformed node; FromJson turns that into a status.
absl::Status PreTokenizer::AddSteps(const nlohmann::json& node, std::vector<Step>* steps,
                                    int depth) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = node.at("type").get<std::string>();
  if (type == "Sequence") {
    // Real files nest one or two; a hostile one deep enough overflows the stack.
    if (depth >= kMaxSequenceDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("pre_tokenizer Sequences nested deeper than ", kMaxSequenceDepth));
    }
    for (const auto& child : node.at("pretokenizers"))
      SHIFT_RETURN_IF_ERROR(AddSteps(child, steps, depth + 1));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    Step byte_level;
    byte_level.kind = Kind::kByteLevel;
    byte_level.add_prefix_space = node.value("add_prefix_space", false);
    steps->push_back(std::move(byte_level));
    if (node.value("use_regex", true)) {
      Step split;
      SHIFT_ASSIGN_OR_RETURN(split.regex, Regex::Compile(kGpt2Pattern));
      steps->push_back(std::move(split));
    }
    return absl::OkStatus();
  }
  if (type == "Digits") {
    // HF splits on Unicode numeric characters, each alone or in runs.
    Step digits;
    SHIFT_ASSIGN_OR_RETURN(digits.regex, Regex::Compile(R"(\p{N})"));
    digits.behavior =
        node.value("individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous;
    steps->push_back(std::move(digits));
    return absl::OkStatus();
  }
  if (type != "Split") {
    return absl::UnimplementedError(absl::StrCat("pre_tokenizer type ", type, " is not supported"));
  }
  Step step;
  const auto& pattern = node.at("pattern");
  if (pattern.contains("Regex")) {
    SHIFT_ASSIGN_OR_RETURN(step.regex, Regex::Compile(pattern.at("Regex").get<std::string>()));
  } else {
    step.literal = pattern.at("String").get<std::string>();
  }
  const std::string behavior = node.at("behavior").get<std::string>();
  if (behavior == "Isolated") {
    step.behavior = Behavior::kIsolated;
  } else if (behavior == "Removed") {
    step.behavior = Behavior::kRemoved;
  } else if (behavior == "MergedWithPrevious") {
    step.behavior = Behavior::kMergedWithPrevious;
  } else if (behavior == "MergedWithNext") {
    step.behavior = Behavior::kMergedWithNext;
  } else if (behavior == "Contiguous") {
    step.behavior = Behavior::kContiguous;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown Split behavior ", behavior));
  }
  step.invert = node.value("invert", false);
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

bool PreTokenizer::has_byte_level() const {
  for (const Step& step : steps_) {
    if (step.kind == Kind::kByteLevel) return true;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> PreTokenizer::Split(std::string_view text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    next.reserve(pieces.size());
    for (const std::string& piece : pieces) SHIFT_RETURN_IF_ERROR(ApplyStep(step, piece, &next));
    pieces = std::move(next);
  }
  return pieces;
}

// Splits one piece the way HF's Split does: matches and the gaps between them
// become parts, which the behavior then keeps, drops or merges. Empty results
// are dropped, as HF does.
absl::Status PreTokenizer::ApplyStep(const Step& step, std::string_view piece,
                                     std::vector<std::string>* out) {
  if (step.kind == Kind::kByteLevel) {
    std::string& result = out->emplace_back();
    if (step.add_prefix_space && piece.front() != ' ') {
      result.reserve(piece.size() + 1);
      result.push_back(' ');
    }
    result.append(piece);
    return absl::OkStatus();
  }
  std::vector<Regex::Span> matches;
  if (step.regex) {
    SHIFT_ASSIGN_OR_RETURN(matches, step.regex->FindAll(piece));
  } else if (!step.literal.empty()) {
    for (size_t at = piece.find(step.literal); at != std::string_view::npos;
         at = piece.find(step.literal, at + step.literal.size())) {
      matches.emplace_back(at, at + step.literal.size());
    }
  }
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (begin != prev) parts.push_back({prev, begin, step.invert});
    parts.push_back({begin, end, !step.invert});
    prev = end;
  }
  if (prev != piece.size()) parts.push_back({prev, piece.size(), step.invert});

  // Merging below mirrors HF's folds exactly, including their edge cases.
  std::vector<Part> kept;
  bool previous_match = false;
  switch (step.behavior) {
    case Behavior::kIsolated:
      kept = std::move(parts);
      break;
    case Behavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.is_match) kept.push_back(p);
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !kept.empty()) {
          kept.back().end = p.end;
        } else {
          kept.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    case Behavior::kContiguous:
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !kept.empty()) {
          kept.back().end = p.end;
        } else {
          kept.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
  }
  for (const Part& p : kept) {
    if (p.end > p.begin) out->emplace_back(piece.substr(p.begin, p.end - p.begin));
  }
  return absl::OkStatus();
}

}  // namespace shift
