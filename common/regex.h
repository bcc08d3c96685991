// A small backtracking regex engine over UTF-8 codepoints, covering exactly
// the syntax of Hugging Face pre-tokenizer patterns with Oniguruma semantics
// (leftmost-first alternation, greedy backtracking quantifiers, lookahead such
// as GPT-2's `\s+(?!\S)`, which RE2 cannot express).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace shift {

// Supported syntax: literals; `.` (any codepoint but \n); classes `[...]` with
// ranges, negation and escapes; \s \S \d \D \w \W (Unicode: White_Space, Nd,
// L|M|Nd|Pc); \p{X} \P{X} \p{^X} for X in L, M, N, Nd, P, Pc, S, Z (and long
// names); \r \n \t \f \v \e \xHH \x{H...} \uHHHH; escaped punctuation;
// `|`; `(...)`, `(?:...)`, `(?i:...)`, `(?-i:...)` (ASCII case folding);
// greedy `* + ? {n} {n,} {n,m}`; `^` `\A` (start of input), `$` `\z` (end of
// input: unlike Oniguruma's Ruby syntax, `$` does not also match before a
// newline; DeepSeek's `\s+$` runs after newlines are split off, where the two
// agree); lookahead `(?=...)`, `(?!...)`. Anything else (lazy or possessive
// quantifiers, backreferences, lookbehind, \b, ...) is rejected at Compile
// with InvalidArgument naming the codepoint offset in the pattern.
class Regex {
 public:
  // A match as a byte range [begin, end) of the searched text.
  using Span = std::pair<size_t, size_t>;

  static absl::StatusOr<Regex> Compile(std::string_view pattern);

  // Successive non-overlapping leftmost matches, scanning left to right and
  // moving one codepoint past an empty match (as Oniguruma's find_iter).
  // `text` should be valid UTF-8; each invalid byte sequence is treated as
  // one U+FFFD codepoint, so any input is safe. Matching of a repetition of a
  // multi-codepoint group is limited in depth (~10k iterations); beyond that
  // the path is treated as failing rather than overflowing the stack. A
  // search that needs more than kBaseSteps + kStepsPerCodepoint steps per
  // codepoint (catastrophic backtracking, as `(a+)+$` on "aaa…b") fails with
  // RESOURCE_EXHAUSTED instead of running for ages.
  absl::StatusOr<std::vector<Span>> FindAll(std::string_view text) const;

  static constexpr int64_t kBaseSteps = 100000;
  static constexpr int64_t kStepsPerCodepoint = 2000;

  const std::string& pattern() const { return pattern_; }

 private:
  friend class RegexCompiler;
  friend class RegexMatcher;

  Regex() = default;

  // A set of codepoints: explicit ranges plus property tests, with ASCII
  // membership precomputed in a bitmap.
  struct CharClass {
    struct PropertyTest {
      uint32_t mask;  // bit i set: UnicodeProperty i
      bool negated;
    };
    std::vector<std::pair<char32_t, char32_t>> ranges;  // sorted, disjoint
    std::vector<PropertyTest> properties;
    bool negated = false;
    uint64_t ascii[2] = {0, 0};

    bool ContainsSlow(char32_t cp) const;
    bool Contains(char32_t cp) const {
      return cp < 128 ? (ascii[cp >> 6] >> (cp & 63)) & 1 : ContainsSlow(cp);
    }
  };

  // The compiled program: a graph of nodes where `next` is the continuation,
  // so backtracking is a recursive walk with no explicit continuation stack.
  struct Node {
    enum Kind {
      kChar,       // cp
      kClass,      // cls
      kAny,        // any codepoint but '\n'
      kBegin,      // start of input
      kEnd,        // end of input
      kAlt,        // try alts in order
      kRepeat,     // greedy {min,max} of the single-codepoint node `body`
      kLoopEntry,  // resets the empty-iteration guard of `loop`, then next
      kLoop,       // greedy star over a general `body` whose tail returns here
      kLook,       // lookahead on `body` (ends in kAccept); negate for (?!)
      kAccept,     // end of a lookahead body
      kMatch,      // end of the whole pattern
    };
    Kind kind;
    int next = -1;
    char32_t cp = 0;
    int cls = -1;
    int body = -1;
    int loop = -1;
    uint32_t min = 0, max = 0;
    bool negate = false;
    std::vector<int> alts;
  };

  bool MatchesOne(const Node& node, char32_t cp) const {
    switch (node.kind) {
      case Node::kChar:
        return cp == node.cp;
      case Node::kClass:
        return classes_[node.cls].Contains(cp);
      default:
        return cp != '\n';  // kAny
    }
  }

  std::string pattern_;
  std::vector<Node> nodes_;
  std::vector<CharClass> classes_;
  int start_ = -1;
  int num_loops_ = 0;
  // Which ASCII codepoints can begin a match; positions whose codepoint is
  // not in the set are skipped without backtracking. All ones when a match
  // may be empty or begin with an anchor or lookahead.
  uint64_t first_ascii_[2] = {0, 0};
};

}  // namespace shift
