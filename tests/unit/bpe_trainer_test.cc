// The BPE trainer: deterministic output that the tokenizer loads, merges
// learned from frequency, and clear limits.
#include "common/bpe_trainer.h"

#include "common/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
