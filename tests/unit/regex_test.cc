// The tokenizer regex engine on hand-written cases: Oniguruma-style leftmost
// alternation, greedy backtracking, counted repetition, lookahead, (?i:),
// classes, Unicode properties, astral codepoints and rejected syntax.
#include "common/regex.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The matched substrings of `text`.
std::vector<std::string> Matches(std::string_view pattern, std::string_view text) {
  auto re = Regex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status();
  if (!re.ok()) return {};
  auto found = re->FindAll(text);
  EXPECT_TRUE(found.ok()) << found.status();
  if (!found.ok()) return {};
  std::vector<std::string> out;
  for (const auto& [begin, end] : *found) out.emplace_back(text.substr(begin, end - begin));
  return out;
}

constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

TEST(RegexTest, LiteralsAndLeftmostAlternation) {
  EXPECT_THAT(Matches("ab", "xabyab"), ElementsAre("ab", "ab"));
  // Leftmost-first, not longest: the first alternative that matches wins.
  EXPECT_THAT(Matches("a|ab", "ab"), ElementsAre("a"));
  EXPECT_THAT(Matches("ab|a", "ab"), ElementsAre("ab"));
}

TEST(RegexTest, GreedyQuantifiersBacktrack) {
  EXPECT_THAT(Matches("a*ab", "aaab"), ElementsAre("aaab"));
  EXPECT_THAT(Matches("(?:ab)+c", "ababc abc"), ElementsAre("ababc", "abc"));
  EXPECT_THAT(Matches("x(?:a|ab)c", "xabc"), ElementsAre("xabc"));
  EXPECT_THAT(Matches("a?b", "b ab"), ElementsAre("b", "ab"));
}

TEST(RegexTest, CountedRepetition) {
  EXPECT_THAT(Matches(R"(\p{N}{1,3})", "1234567"), ElementsAre("123", "456", "7"));
  EXPECT_THAT(Matches("a{2}", "aaaaa"), ElementsAre("aa", "aa"));
  EXPECT_THAT(Matches("a{2,}", "a aa aaaa"), ElementsAre("aa", "aaaa"));
  EXPECT_THAT(Matches("(?:ab){1,2}", "abababa"), ElementsAre("abab", "ab"));
  // A brace that is not an interval is a literal.
  EXPECT_THAT(Matches("a{x", "a{x"), ElementsAre("a{x"));
}

TEST(RegexTest, LookaheadIsExact) {
  // GPT-2's \s+(?!\S): trailing whitespace before a word leaves one space.
  EXPECT_THAT(Matches(R"(\s+(?!\S)|\s+)", "a   b"), ElementsAre("  ", " "));
  EXPECT_THAT(Matches(R"(\s+(?!\S))", "x  "), ElementsAre("  "));
  EXPECT_THAT(Matches("a(?=b)", "ac ab"), ElementsAre("a"));
  EXPECT_THAT(Matches(kGpt2, "Hello   world  "), ElementsAre("Hello", "  ", " world", "  "));
}

TEST(RegexTest, CaseInsensitiveGroup) {
  const std::string_view pattern = "(?i:'s|'t|'re)|x";
  EXPECT_THAT(Matches(pattern, "IT'S we'RE 'T X x"), ElementsAre("'S", "'RE", "'T", "x"));
}

TEST(RegexTest, ClassesAndProperties) {
  EXPECT_THAT(Matches("[a-c]+", "abcdcba"), ElementsAre("abc", "cba"));
  EXPECT_THAT(Matches("[^a-c ]+", "abcdef gh"), ElementsAre("def", "gh"));
  EXPECT_THAT(Matches(R"([\r\n]+)", "a\r\nb\n"), ElementsAre("\r\n", "\n"));
  EXPECT_THAT(Matches(R"(\p{L}+)", "héllo wörld Привет 日本"),
              ElementsAre("héllo", "wörld", "Привет", "日本"));
  EXPECT_THAT(Matches(R"(\P{L}+)", "ab12 cd"), ElementsAre("12 "));
  EXPECT_THAT(Matches(R"(\d+|\w+)", "ab_1 23"), ElementsAre("ab_1", "23"));
  // \s is Unicode White_Space: U+3000 and U+00A0 are spaces, U+200B is not.
  EXPECT_THAT(Matches(R"(\s+)", "a\u3000\u00a0b\u200bc"), ElementsAre("\u3000\u00a0"));
  EXPECT_THAT(Matches(R"([^\s\p{L}\p{N}]+)", "a!?b ¿"), ElementsAre("!?", "¿"));
  EXPECT_THAT(Matches("a.c", "abc a\nc"), ElementsAre("abc"));
  EXPECT_THAT(Matches(R"(\x41\u0042\.)", "AB. AB"), ElementsAre("AB."));
}

TEST(RegexTest, AstralCodepoints) {
  // Ranges above U+FFFF (JSON gives them as surrogate pairs, decoded to UTF-8).
  EXPECT_THAT(Matches("[\U0001F600-\U0001F64F]+", "hi 😀😁 🚀"), ElementsAre("😀😁"));
  EXPECT_THAT(Matches(R"(\p{L}+)", "𝔘𝔫𝔦 🦙"), ElementsAre("𝔘𝔫𝔦"));
  EXPECT_THAT(Matches(".", "🦙"), ElementsAre("🦙"));
}

TEST(RegexTest, Anchors) {
  EXPECT_THAT(Matches(R"(\s+$)", "a  b  "), ElementsAre("  "));
  EXPECT_THAT(Matches("^a", "aaa"), ElementsAre("a"));
}

TEST(RegexTest, EmptyMatchesAdvance) {
  EXPECT_THAT(Matches("x*", "ab"), ElementsAre("", "", ""));
  EXPECT_THAT(Matches("(?:a*)*b", "aab"), ElementsAre("aab"));
}

TEST(RegexTest, InvalidUtf8TextIsSafe) {
  EXPECT_THAT(Matches(R"(\p{L}+)",
                      "ab\xFF\x80"
                      "cd"),
              ElementsAre("ab", "cd"));
}

TEST(RegexTest, UnsupportedSyntaxNamesPosition) {
  for (const char* pattern :
       {"a*?", "(?<=a)b", R"(\bword)", "(a", "a)", "[a-", R"(\p{Foo})", "*a", "a{3,2}", R"(\1)"}) {
    auto re = Regex::Compile(pattern);
    ASSERT_FALSE(re.ok()) << pattern;
    EXPECT_EQ(re.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(re.status().message(), HasSubstr("offset")) << pattern;
  }
}

// Catastrophic backtracking is an error after a bounded number of steps,
// not an exponential hang.
TEST(RegexTest, CatastrophicBacktrackingFailsInsteadOfHanging) {
  auto re = Regex::Compile("(a+)+$");
  ASSERT_TRUE(re.ok()) << re.status();
  const std::string text = std::string(40, 'a') + "!";
  auto found = re->FindAll(text);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(found.status().message(), HasSubstr("catastrophic backtracking"));
  // The same pattern on input it handles quickly still matches.
  EXPECT_THAT(Matches("(a+)+$", "xaaaa"), ElementsAre("aaaa"));
  // Linear patterns stay far within the budget on long input.
  const std::string spaces(200000, ' ');
  EXPECT_EQ(Matches(kGpt2, spaces + "x").size(), 2u);
}

}  // namespace
}  // namespace shift
