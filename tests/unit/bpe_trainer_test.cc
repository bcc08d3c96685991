// The BPE trainer: deterministic output that the tokenizer loads, merges
// learned from frequency (the same as a naive recount gives), clear limits.
#include "common/bpe_trainer.h"

#include <map>

#include "common/pretokenizer.h"
#include "common/tokenizer.h"
#include "common/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

constexpr char kText[] =
    "the cat sat on the mat. the cat ate the rat. the rat ran. "
    "a cat, a mat, a rat: that is the tale of the cat and the rat.\n"
    "numbers 123 4567 and accents café déjà vu, 日本語 and 🚀🚀 too.\n";

TEST(BpeTrainerTest, TrainedTokenizerLoadsAndRoundTrips) {
  BpeTrainerOptions options;
  options.vocab_size = 320;
  auto json = TrainByteLevelBpe(kText, options);
  ASSERT_TRUE(json.ok()) << json.status();
  auto tokenizer = Tokenizer::FromJson(*json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_LE((*tokenizer)->vocab_size(), 320);
  EXPECT_GT((*tokenizer)->vocab_size(), 256 + 2);
  for (const std::string& text :
       {std::string(kText), std::string("unseen words: zebra ✨ \xc3\xbf")}) {
    auto ids = (*tokenizer)->Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*(*tokenizer)->Decode(*ids), text);
  }
  // The most frequent words became single tokens.
  EXPECT_EQ((*tokenizer)->Encode(" the")->size(), 1u);
  EXPECT_EQ((*tokenizer)->Encode(" cat")->size(), 1u);
  // Special tokens come after the trained vocabulary and parse when asked.
  auto bos = (*tokenizer)->TokenToId("<|begin_of_text|>");
  ASSERT_TRUE(bos.has_value());
  EXPECT_TRUE((*tokenizer)->IsSpecial(*bos));
  EXPECT_EQ(*(*tokenizer)->Encode("<|begin_of_text|>", true), std::vector<int32_t>{*bos});
}

// The merges of a naive trainer that recounts every pair before each merge,
// with the same tie-break: higher count, then the pair of smaller token ids.
std::vector<std::string> NaiveMerges(const PreTokenizer& pre_tokenizer, std::string_view text,
                                     size_t max_merges) {
  std::map<std::string, int64_t> piece_counts;
  auto pieces = pre_tokenizer.Split(text);
  EXPECT_TRUE(pieces.ok()) << pieces.status();
  for (const std::string& piece : *pieces) ++piece_counts[piece];
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [piece, count] : piece_counts) {
    words.push_back({std::vector<int32_t>(piece.begin(), piece.end()), count});
    for (int32_t& s : words.back().first) s = static_cast<unsigned char>(s);
  }
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  std::vector<std::string> merges;
  while (merges.size() < max_merges) {
    std::map<std::pair<int32_t, int32_t>, int64_t> counts;
    for (const auto& [s, count] : words) {
      for (size_t j = 0; j + 1 < s.size(); ++j) counts[{s[j], s[j + 1]}] += count;
    }
    auto best = counts.end();
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (best == counts.end() || it->second > best->second) best = it;
    }
    if (best == counts.end() || best->second < 2) break;
    const auto [left, right] = best->first;
    merges.push_back(ByteLevelEncode(tokens[left]) + " " + ByteLevelEncode(tokens[right]));
    const int32_t merged = static_cast<int32_t>(tokens.size());
    tokens.push_back(tokens[left] + tokens[right]);
    for (auto& [s, count] : words) {
      std::vector<int32_t> out;
      for (size_t j = 0; j < s.size(); ++j) {
        const bool match = j + 1 < s.size() && s[j] == left && s[j + 1] == right;
        out.push_back(match ? merged : s[j]);
        if (match) ++j;
      }
      s = std::move(out);
    }
  }
  return merges;
}

TEST(BpeTrainerTest, IncrementalCountsMatchANaiveRecount) {
  // Words over a small alphabet: many ties and runs like "aaaa" whose pairs
  // overlap, which is where incremental bookkeeping goes wrong.
  std::string text = kText;
  uint32_t state = 12345;
  for (int i = 0; i < 1500; ++i) {
    state = state * 1664525u + 1013904223u;
    text += (state >> 28) % 3 == 0 ? " " : "";
    text += std::string(1 + (state >> 20) % 4, "abcde"[(state >> 8) % 5]);
    if (i % 97 == 0) text += ", 1999 ñ 🚀\n";
  }
  BpeTrainerOptions options;
  options.vocab_size = 256 + 2 + 400;
  auto trained = TrainByteLevelBpe(text, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  const nlohmann::json json = nlohmann::json::parse(*trained);
  auto pre_tokenizer = PreTokenizer::FromJson(json["pre_tokenizer"]);
  ASSERT_TRUE(pre_tokenizer.ok()) << pre_tokenizer.status();
  const auto merges = json["model"]["merges"].get<std::vector<std::string>>();
  EXPECT_GT(merges.size(), 100u);
  EXPECT_EQ(merges, NaiveMerges(*pre_tokenizer, text, 400));
}

TEST(BpeTrainerTest, OutputIsDeterministic) {
  BpeTrainerOptions options;
  options.vocab_size = 300;
  EXPECT_EQ(*TrainByteLevelBpe(kText, options), *TrainByteLevelBpe(kText, options));
}

TEST(BpeTrainerTest, StopsWhenNoPairRepeats) {
  BpeTrainerOptions options;
  options.vocab_size = 100000;
  auto json = TrainByteLevelBpe("abcd", options);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*Tokenizer::FromJson(*json))->vocab_size(), 256 + 2);
}

TEST(BpeTrainerTest, RefusesAVocabularyTooSmallForTheBytes) {
  BpeTrainerOptions options;
  options.vocab_size = 200;
  auto json = TrainByteLevelBpe(kText, options);
  ASSERT_FALSE(json.ok());
  EXPECT_THAT(json.status().message(), ::testing::HasSubstr("at least 258"));
}

}  // namespace
}  // namespace shift
