// SentencePiece tokenizers (the two real Mistral models of the shared data)
// and the prompt conventions every model directory's files set: BOS/EOS from
// tokenizer_config.json and tokenizer.json's post_processor. The ids of the
// 46 test strings are checked against Debian's python3-sentencepiece by
// tests/python/sentencepiece_reference_test.py; here: a documented example,
// round trips, streaming, special tokens and the conventions.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/detokenizer.h"
#include "common/generation_config.h"
#include "common/tokenizer.h"
#include "common/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"
#include "tests/unit/tokenizer_test_data.h"

namespace shift {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const Tokenizer& Mistral(const std::string& version) {
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  std::unique_ptr<Tokenizer>& slot = (*loaded)[version];
  if (!slot) {
    auto t =
        Tokenizer::FromFile(testdata::TokenizerDir() + "/mistral-" + version + ".tokenizer.model");
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) slot = *std::move(t);
  }
  return *slot;
}

std::vector<int32_t> Ids(const Tokenizer& t, const std::string& text, bool special = false) {
  auto ids = t.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

class SentencePieceTest : public ::testing::TestWithParam<const char*> {};

TEST(SentencePieceExampleTest, EncodesAsTheDataReadmeSays) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  const Tokenizer& v1 = Mistral("v1");
  EXPECT_EQ(v1.vocab_size(), 32000);
  EXPECT_STREQ(v1.kind(), "SentencePiece");
  EXPECT_THAT(Ids(v1, "Hello world, 123 ünïcödé 🦙"),
              ElementsAre(22557, 1526, 28725, 28705, 28740, 28750, 28770, 4675, 28711, 28920, 28717,
                          14697, 28797, 28705, 243, 162, 169, 156));
  EXPECT_EQ(v1.model_bos_id(), 1);
  EXPECT_EQ(v1.model_eos_id(), 2);
  EXPECT_TRUE(Ids(v1, "").empty());
}

TEST_P(SentencePieceTest, RoundTripsAndStreamsEveryPrefixAsTheFullDecode) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  const Tokenizer& t = Mistral(GetParam());
  auto strings = testdata::TestStrings();
  ASSERT_TRUE(strings.has_value());
  strings->push_back(
      "🦙🚀👨‍👩‍👧‍👦 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱 龘靐齉 한국어  two "
      " "
      "spaces ");
  int held_back = 0;
  for (const std::string& text : *strings) {
    const std::vector<int32_t> ids = Ids(t, text);
    auto decoded = t.Decode(ids);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, text);
    // Every prefix: the deltas so far are the full decode of the prefix,
    // less the bytes of a character not yet complete.
    IncrementalDetokenizer detokenizer(t, /*skip_special=*/false, /*at_text_start=*/true);
    std::string streamed;
    for (size_t i = 0; i < ids.size(); ++i) {
      auto delta = detokenizer.Append(ids[i]);
      ASSERT_TRUE(delta.ok());
      EXPECT_EQ(FindInvalidUtf8(*delta), std::string::npos);
      streamed += *delta;
      auto prefix = t.Decode(absl::MakeConstSpan(ids).subspan(0, i + 1));
      ASSERT_TRUE(prefix.ok());
      ASSERT_TRUE(prefix->starts_with(streamed)) << text << " at token " << i;
      const std::string rest = prefix->substr(streamed.size());
      EXPECT_LT(rest.size(), 4u) << text << " at token " << i;
      if (!rest.empty()) ++held_back;
    }
    streamed += detokenizer.Finish();
    EXPECT_EQ(streamed, text);
  }
  // Byte-fallback pieces split characters, or nothing was held back.
  EXPECT_GT(held_back, 0);
}

TEST_P(SentencePieceTest, SpecialTokensAreTextUnlessParsedAndDecodeToTheirText) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  const Tokenizer& t = Mistral(GetParam());
  const int32_t bos = *t.TokenToId("<s>"), eos = *t.TokenToId("</s>");
  EXPECT_TRUE(t.IsSpecial(bos) && t.IsSpecial(eos) && t.IsSpecial(0));  // 0: <unk>
  EXPECT_FALSE(t.IsSpecial(Ids(t, "Hello")[0]));
  const std::vector<int32_t> plain = Ids(t, "<s>Hello</s>");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), bos), 0);
  std::vector<int32_t> want = {bos};
  for (int32_t id : Ids(t, "Hello")) want.push_back(id);
  want.push_back(eos);
  EXPECT_EQ(Ids(t, "<s>Hello</s>", /*special=*/true), want);
  EXPECT_EQ(*t.Decode(want), "<s> Hello</s>");
  EXPECT_EQ(*t.Decode(want, /*skip_special=*/true), "Hello");
}

TEST(SentencePieceControlTokensTest, InstructV3ParsesItsControlTokens) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  const Tokenizer& v3 = Mistral("v3");
  const int32_t inst = *v3.TokenToId("[INST]"), end = *v3.TokenToId("[/INST]");
  EXPECT_TRUE(v3.IsSpecial(inst));
  // Each text segment is encoded as a string of its own (mistral-common).
  std::vector<int32_t> want = {1, inst};
  for (int32_t id : Ids(v3, " Hi")) want.push_back(id);
  want.push_back(end);
  EXPECT_EQ(Ids(v3, "<s>[INST] Hi[/INST]", /*special=*/true), want);
  EXPECT_EQ(std::count(want.begin(), want.end(), inst), 1);
  const std::vector<int32_t> plain = Ids(v3, "[INST]");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), inst), 0);
  // A stop string across control tokens' text works on the decoded text.
  EXPECT_EQ(*v3.Decode(Ids(v3, "[INST]", true)), "[INST]");
}

TEST(SentencePieceControlTokensTest, InvalidUtf8IsRefusedWithItsOffset) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  auto ids = Mistral("v1").Encode("ok \xC3 bad");
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(ids.status().message(), HasSubstr("at byte 3"));
}

INSTANTIATE_TEST_SUITE_P(Mistral, SentencePieceTest, ::testing::Values("v1", "v3"));

// ---- the prompt conventions of a model directory -------------------------

class ModelTokenizerTest : public ::testing::Test {
 protected:
  std::string Dir() const { return tmp_.path().string(); }
  void CopyShared(const std::string& name, const std::string& as) {
    std::filesystem::copy_file(testdata::TokenizerDir() + "/" + name, tmp_.Sub(as));
  }
  testing::TestTempDir tmp_;
};

TEST_F(ModelTokenizerTest, Llama3sRealPostProcessorGivesBos) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  // The shared file was converted without its post_processor; this is the
  // real one of Llama 3's tokenizer.json.
  auto text = testdata::ReadFile(testdata::TokenizerPath("llama-bpe"));
  ASSERT_TRUE(text.has_value());
  nlohmann::json j = nlohmann::json::parse(*text);
  j["post_processor"] = nlohmann::json::parse(R"({
    "type": "Sequence",
    "processors": [
      {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}}],
       "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                "tokens": ["<|begin_of_text|>"]}}}]})");
  WriteFile(tmp_.Sub("tokenizer.json"), j.dump());
  WriteFile(tmp_.Sub("tokenizer_config.json"),
            R"({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                "model_max_length": 1000000000000000019884624838656,
                "tokenizer_class": "PreTrainedTokenizerFast"})");
  auto t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, /*add_special_tokens=*/true),
              ElementsAre(128000, 9906));
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, /*add_special_tokens=*/false), ElementsAre(9906));
  // Without the post_processor (the shared file as it is): nothing added.
  CopyShared("llama-bpe.tokenizer.json", "plain.json");
  std::filesystem::rename(tmp_.Sub("plain.json"), tmp_.Sub("tokenizer.json"));
  t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, true), ElementsAre(9906));
}

TEST_F(ModelTokenizerTest, TokenizerConfigFlagsOverrideEitherSide) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  CopyShared("mistral-v1.tokenizer.model", "tokenizer.model");
  auto t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_TRUE(t.ok()) << t.status();
  // SentencePiece without tokenizer_config.json: BOS, as transformers.
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, true), ElementsAre(1, 22557));
  WriteFile(tmp_.Sub("tokenizer_config.json"),
            R"({"add_bos_token": false, "add_eos_token": true,
                "bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>"})");
  t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, true), ElementsAre(22557, 2));
  EXPECT_THAT(*(*t)->EncodePrompt("Hello", false, false), ElementsAre(22557));
}

TEST_F(ModelTokenizerTest, TheByteLevelTokenizerJsonWinsOverATokenizerModel) {
  SHIFT_SKIP_WITHOUT_TOKENIZER_DATA();
  CopyShared("gpt-2.tokenizer.json", "tokenizer.json");
  CopyShared("mistral-v1.tokenizer.model", "tokenizer.model");
  auto t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_STREQ((*t)->kind(), "byte-level BPE");
}

TEST_F(ModelTokenizerTest, ASentencePieceKindTokenizerJsonAloneIsRefusedNamingTheModelFile) {
  WriteFile(tmp_.Sub("tokenizer.json"), R"({
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "},
       "content": "\u2581"}]},
    "pre_tokenizer": null, "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
    "model": {"type": "BPE", "byte_fallback": true, "vocab": {}, "merges": []}})");
  auto t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.json"));
  EXPECT_THAT(t.status().message(), HasSubstr("SentencePiece"));
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.model"));
  // With the model beside it, the model loads.
  if (testdata::ReadFile(testdata::TokenizerDir() + "/test-strings.txt")) {
    CopyShared("mistral-v1.tokenizer.model", "tokenizer.model");
    t = LoadModelTokenizer(Dir(), kMaxTokenId);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_STREQ((*t)->kind(), "SentencePiece");
  }
}

TEST_F(ModelTokenizerTest, NoTokenizerAtAllIsNotFoundNamingBothKinds) {
  auto t = LoadModelTokenizer(Dir(), kMaxTokenId);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.json"));
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.model"));
}

TEST(GenerationConfigTest, ReadsEosIdsAndSamplingDefaults) {
  auto g = ParseGenerationConfig(
      R"({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": true,
          "temperature": 0.6, "top_p": 0.9, "top_k": 20, "transformers_version": "4.45"})",
      "generation_config.json");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_THAT(g->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_FLOAT_EQ(*g->temperature, 0.6f);
  EXPECT_FLOAT_EQ(*g->top_p, 0.9f);
  EXPECT_EQ(*g->top_k, 20);
  g = ParseGenerationConfig(R"({"eos_token_id": 2})", "g");
  ASSERT_TRUE(g.ok());
  EXPECT_THAT(g->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(g->temperature || g->top_p || g->top_k);
}

}  // namespace
}  // namespace shift
