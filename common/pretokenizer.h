// Hugging Face pre-tokenizers: split text into the pieces that BPE encodes
// separately. Built from the `pre_tokenizer` node of a tokenizer.json; also
// used by the BPE trainer to split training text the same way.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/regex.h"
#include "nlohmann/json.hpp"

namespace shift {

// Supported types: Split (pattern {"Regex": ...} or {"String": ...};
// behavior Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous;
// invert), ByteLevel (add_prefix_space; use_regex applies the GPT-2 pattern),
// Digits (individual_digits) and Sequence. Other types are Unimplemented.
//
// Pieces are raw UTF-8 bytes, not the ByteLevel alphabet: the byte-to-unicode
// mapping of ByteLevel is a property of the vocabulary and is applied by the
// Tokenizer, so a ByteLevel step here only adds the prefix space and/or splits.
class PreTokenizer {
 public:
  // A null node (or an empty Sequence) keeps the whole text as one piece.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& node);

  // The non-empty pieces of `text`, in order. Their concatenation is `text`
  // except for bytes a Removed split drops and spaces ByteLevel adds. Fails
  // (RESOURCE_EXHAUSTED) when a pattern backtracks catastrophically.
  absl::StatusOr<std::vector<std::string>> Split(std::string_view text) const;

  // Whether a ByteLevel step is present (the vocabulary is then byte-level).
  bool has_byte_level() const;

 private:
  enum class Kind { kSplit, kByteLevel };
  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

  // One step; Digits and Sequence are flattened into Split steps at load.
  struct Step {
    Kind kind = Kind::kSplit;
    // kSplit: the matcher is a regex, or a literal string when there is none.
    std::optional<Regex> regex;
    std::string literal;
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    // kByteLevel:
    bool add_prefix_space = false;
  };

  static absl::Status AddSteps(const nlohmann::json& node, std::vector<Step>* steps, int depth = 0);
  static absl::Status ApplyStep(const Step& step, std::string_view piece,
                                std::vector<std::string>* out);

  std::vector<Step> steps_;
};

}  // namespace shift
