// Tokenizer against the real vocabularies in the shared data folder: exact
// ids for the 46 reference strings, round trips, special tokens, invalid
// UTF-8 and random inputs.
#include "common/tokenizer.h"

#include <algorithm>
#include <random>
#include <thread>

#include "absl/strings/str_join.h"
#include "common/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/tokenizer_test_data.h"

namespace shift {
namespace {

using ::testing::HasSubstr;

class VocabularyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(VocabularyTest, ReproducesReferenceIdsAndDecodesBack) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tokenizer = **loaded;
  const auto strings = testdata::TestStrings();
  const auto expected = testdata::ExpectedIds(GetParam());
  ASSERT_TRUE(strings && expected);
  ASSERT_EQ(strings->size(), 46u);
  ASSERT_EQ(expected->size(), strings->size());
  for (size_t i = 0; i < strings->size(); ++i) {
    const std::string& text = (*strings)[i];
    auto ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, (*expected)[i])
        << "string " << i << ": \"" << text << "\"\n got " << absl::StrJoin(*ids, " ");
    auto decoded = tokenizer.Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text) << "string " << i;
  }
}

TEST_P(VocabularyTest, RoundTripsMultilingualCorpus) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* tokenizer = *loaded;
  const std::vector<std::string> corpus = {
      "The quick brown fox jumps over the lazy dog. It's 12:45 -- isn't it?\n",
      "Crème brûlée, naïve façade, Ångström, Łódź, Ærøskøbing, ÿ ø ö ü",
      "日本語のテキストと中文文本，还有한국어 텍스트。",
      "Emoji: 🦙🚀 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 😶‍🌫️ and astral "
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 "
      "𠜎𠜱",
      "   leading and trailing   \t\r\n  ",
      "<|endoftext|> [PAD100020] <｜begin▁of▁sentence｜>",
  };
  for (const std::string& text : corpus) {
    auto ids = tokenizer->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto decoded = tokenizer->Decode(*ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
  }
}

TEST_P(VocabularyTest, RejectsInvalidUtf8WithOffset) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* tokenizer = *loaded;
  const std::vector<std::pair<std::string, size_t>> cases = {
      {"ab\x80", 2},                  // lone continuation byte
      {"x\xF0\x9F\x98", 1},           // truncated 4-byte sequence
      {"\xC0\xAF", 0},                // overlong '/'
      {"ok \xE0\x80\xAF", 3},         // overlong 3-byte
      {"\xED\xA0\x80 surrogate", 0},  // U+D800 encoded in UTF-8
      {"abc\xFF", 3},                 // never valid
      {"\xF4\x90\x80\x80", 0},        // above U+10FFFF
  };
  for (const auto& [text, offset] : cases) {
    auto ids = tokenizer->Encode(text);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr(absl::StrCat("at byte ", offset)));
  }
}

TEST_P(VocabularyTest, RandomInputsNeverCrashAndValidOnesRoundTrip) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer(GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* tokenizer = *loaded;
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 300; ++iter) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    auto ids = tokenizer->Encode(bytes, /*parse_special=*/iter % 2 == 0);
    EXPECT_EQ(ids.ok(), FindInvalidUtf8(bytes) == std::string::npos);

    // Valid text mixing ASCII, Latin, CJK, astral codepoints and whitespace.
    std::string text;
    for (int n = rng() % 48; n > 0; --n) {
      char32_t cp;
      switch (rng() % 5) {
        case 0:
          cp = 0x20 + rng() % 0x5F;
          break;
        case 1:
          cp = U" \t\n\r"[rng() % 4];
          break;
        case 2:
          cp = 0x80 + rng() % 0x780;
          break;
        case 3:
          cp = 0x3000 + rng() % 0x7000;
          break;
        default:
          cp = 0x10000 + rng() % 0x10000;
          break;
      }
      AppendUtf8(cp, &text);
    }
    auto text_ids = tokenizer->Encode(text, iter % 2 == 0);
    ASSERT_TRUE(text_ids.ok()) << text_ids.status();
    auto decoded = tokenizer->Decode(*text_ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, text);
  }
}

INSTANTIATE_TEST_SUITE_P(AllVocabularies, VocabularyTest,
                         ::testing::ValuesIn(testdata::kVocabularies), [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TokenizerTest, SpecialTokensParsedOnlyWhenAsked) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer("gpt-2");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* gpt2 = *loaded;
  const int32_t eot = *gpt2->TokenToId("<|endoftext|>");
  EXPECT_EQ(eot, 50256);
  EXPECT_TRUE(gpt2->IsSpecial(eot));
  EXPECT_FALSE(gpt2->IsSpecial(0));

  auto parsed = gpt2->Encode("Hi<|endoftext|>", /*parse_special=*/true);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ(parsed->back(), eot);
  auto plain = gpt2->Encode("<|endoftext|>");
  ASSERT_TRUE(plain.ok());
  EXPECT_GT(plain->size(), 1u);
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains(eot)));

  EXPECT_EQ(*gpt2->Decode(*parsed), "Hi<|endoftext|>");
  EXPECT_EQ(*gpt2->Decode(*parsed, /*skip_special=*/true), "Hi");
}

TEST(TokenizerTest, NonSpecialAddedTokensAlwaysMatch) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer("deepseek-llm");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* deepseek = *loaded;
  EXPECT_EQ(deepseek->vocab_size(), 102400);
  auto ids = deepseek->Encode("x[PAD100020]y");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ::testing::Contains(100020));
  EXPECT_FALSE(deepseek->IsSpecial(100020));
}

TEST(TokenizerTest, VocabularyAccessors) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer("gpt-2");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* gpt2 = *loaded;
  EXPECT_EQ(gpt2->vocab_size(), 50257);
  const auto hello = gpt2->TokenToId("Ġhello");
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(gpt2->TokenBytes(*hello), " hello");
  EXPECT_FALSE(gpt2->TokenToId("not a token at all").has_value());
  EXPECT_FALSE(gpt2->TokenBytes(-1).has_value());
  EXPECT_FALSE(gpt2->TokenBytes(50257).has_value());
  const int32_t bad[] = {15496, 50257};
  auto decoded = gpt2->Decode(bad);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("50257"));
}

TEST(TokenizerTest, RejectsUnsupportedParts) {
  const std::string model =
      R"("model": {"type": "BPE", "vocab": {}, "merges": []}, "decoder": {"type": "ByteLevel"})";
  auto normalizer = Tokenizer::FromJson(R"({"normalizer": {"type": "NFKC"}, )" + model + "}");
  EXPECT_EQ(normalizer.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(normalizer.status().message(), HasSubstr("NFKC"));
  auto unigram = Tokenizer::FromJson(
      R"({"model": {"type": "Unigram", "vocab": []}, "decoder": {"type": "ByteLevel"}})");
  EXPECT_EQ(unigram.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(unigram.status().message(), HasSubstr("Unigram"));
  auto malformed = Tokenizer::FromJson("{not json");
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, ConcurrentEncodesMatchSequentialOnes) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto loaded = testdata::LoadTokenizer("llama-bpe");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer* llama = *loaded;
  const auto strings = testdata::TestStrings();
  ASSERT_TRUE(strings);
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& text : *strings) expected.push_back(*llama->Encode(text));

  // Several threads share the tokenizer (and its piece cache) at once.
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < strings->size(); ++i) {
          size_t k =
              (i + static_cast<size_t>(t) * 7 + static_cast<size_t>(round)) % strings->size();
          auto ids = llama->Encode((*strings)[k] + " " + std::to_string(round));
          auto plain = llama->Encode((*strings)[k]);
          if (!ids.ok() || !plain.ok() || *plain != expected[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

TEST(TokenizerTest, MissingFileIsNotFound) {
  auto tokenizer = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace shift
