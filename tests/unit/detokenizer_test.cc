// Incremental detokenization: deltas are whole UTF-8 characters and add up to
// the full Decode, on all four real vocabularies, including text where single
// tokens carry only part of a character (emoji, CJK, astral codepoints).
#include "common/detokenizer.h"

#include <string>
#include <vector>

#include "common/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer_test_data.h"

namespace shift {
namespace {

// Streams `ids` through a detokenizer, checking every delta is valid UTF-8;
// returns the concatenated output and how many Append calls held bytes back.
std::string Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                   int* held_back = nullptr) {
  IncrementalDetokenizer detokenizer(tokenizer);
  std::string out;
  for (const int32_t id : ids) {
    auto delta = detokenizer.Append(id);
    EXPECT_TRUE(delta.ok()) << delta.status();
    if (!delta.ok()) return out;
    EXPECT_EQ(FindInvalidUtf8(*delta), std::string::npos) << "delta for id " << id;
    if (held_back && delta->size() < tokenizer.TokenBytes(id)->size()) ++*held_back;
    out += *delta;
  }
  const std::string tail = detokenizer.Finish();
  EXPECT_EQ(FindInvalidUtf8(tail), std::string::npos);
  return out + tail;
}

class DetokenizerTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DetokenizerTest, DeltasAddUpToFullDecode) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tokenizer = **loaded;
  auto strings = testdata::TestStrings();
  ASSERT_TRUE(strings.has_value());
  strings->push_back(
      "🦙🚀👨‍👩‍👧‍👦🏳️‍🌈 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱 龘靐齉 ひらがな 한국어 "
      "ẞ "
      "ǅ");
  int held_back = 0;
  for (const std::string& text : *strings) {
    auto ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto decoded = tokenizer.Decode(*ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(Stream(tokenizer, *ids, &held_back), *decoded) << text;
  }
  // Some tokens must have split a character, or nothing was tested.
  EXPECT_GT(held_back, 0);
}

INSTANTIATE_TEST_SUITE_P(AllVocabularies, DetokenizerTest,
                         ::testing::ValuesIn(testdata::kVocabularies), [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

class Gpt2DetokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
    auto loaded = testdata::LoadTokenizer("gpt-2");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = *loaded;
  }
  // The id of the single-byte token for `byte`, found through its bytes.
  int32_t ByteId(unsigned char byte) const {
    for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
      if (tokenizer_->TokenBytes(id) == std::string(1, static_cast<char>(byte))) return id;
    }
    ADD_FAILURE() << "no token for byte " << int{byte};
    return 0;
  }
  const Tokenizer* tokenizer_ = nullptr;
};

TEST_F(Gpt2DetokenizerTest, HoldsBackIncompleteCharacter) {
  IncrementalDetokenizer detokenizer(*tokenizer_);
  // U+1F999 (F0 9F A6 99) fed one byte token at a time.
  EXPECT_EQ(*detokenizer.Append(ByteId(0xF0)), "");
  EXPECT_EQ(*detokenizer.Append(ByteId(0x9F)), "");
  EXPECT_EQ(*detokenizer.Append(ByteId(0xA6)), "");
  EXPECT_EQ(*detokenizer.Append(ByteId(0x99)), "🦙");
  EXPECT_EQ(detokenizer.Finish(), "");
}

TEST_F(Gpt2DetokenizerTest, ReplacesInvalidAndTruncatedBytes) {
  IncrementalDetokenizer detokenizer(*tokenizer_);
  EXPECT_EQ(*detokenizer.Append(ByteId(0xFF)), "\uFFFD");
  EXPECT_EQ(*detokenizer.Append(ByteId(0xE6)), "");
  // 'A' cannot continue E6: the held byte becomes U+FFFD, 'A' goes out.
  EXPECT_EQ(*detokenizer.Append(ByteId('A')), "\uFFFDA");
  EXPECT_EQ(*detokenizer.Append(ByteId(0xF0)), "");
  EXPECT_EQ(*detokenizer.Append(ByteId(0x9F)), "");
  EXPECT_EQ(detokenizer.Finish(), "\uFFFD");
  // Finish resets: the next stream starts clean.
  EXPECT_EQ(*detokenizer.Append(ByteId('B')), "B");
}

TEST_F(Gpt2DetokenizerTest, RejectsUnknownIdAndSkipsSpecial) {
  IncrementalDetokenizer detokenizer(*tokenizer_, /*skip_special=*/true);
  auto bad = detokenizer.Append(tokenizer_->vocab_size());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*detokenizer.Append(50256), "");
  EXPECT_EQ(*detokenizer.Append(ByteId('x')), "x");
}

}  // namespace
}  // namespace shift
