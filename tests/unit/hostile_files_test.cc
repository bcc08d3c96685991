// Model files a hostile or broken source could hand the loaders: each is a
// clear error, quickly, never a crash, a hang or a huge allocation. These
// used to abort (std::length_error, std::bad_alloc after 17 s) or hang.
// Quantization, sliding windows and Qwen 3's norms: a wrong value is an
// error at load naming the file and the field or tensor.
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/file_util.h"
#include "common/generation_config.h"
#include "common/model_config.h"
#include "common/model_schema.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift {
namespace {

using ::testing::HasSubstr;

// A byte-level BPE tokenizer.json with the 256 byte tokens, to which a test
// adds what it needs.
nlohmann::json MinimalTokenizer() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < bs.size(); ++i) {
    std::string utf8;
    const int c = cs[i];
    if (c < 0x80) {
      utf8 += static_cast<char>(c);
    } else {
      utf8 += static_cast<char>(0xC0 | (c >> 6));
      utf8 += static_cast<char>(0x80 | (c & 0x3F));
    }
    vocab[utf8] = bs[i];
  }
  return {{"version", "1.0"},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
}

TEST(HostileFilesTest, TheMinimalTokenizerLoads) {
  EXPECT_TRUE(Tokenizer::FromJson(MinimalTokenizer().dump()).ok());
}

TEST(HostileFilesTest, TokenIdsOfTwoToTheThirtyOneAreRefused) {
  nlohmann::json t = MinimalTokenizer();
  t["model"]["vocab"]["zz"] = 2147483647;
  auto loaded = Tokenizer::FromJson(t.dump());
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("outside 0.."));
  t = MinimalTokenizer();
  t["added_tokens"] = {{{"id", 2147483646}, {"content", "<x>"}, {"special", true}}};
  EXPECT_FALSE(Tokenizer::FromJson(t.dump()).ok());
}

TEST(HostileFilesTest, ACatastrophicPreTokenizerRegexFailsTheLoad) {
  nlohmann::json t = MinimalTokenizer();
  t["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const auto start = std::chrono::steady_clock::now();
  auto loaded = Tokenizer::FromJson(t.dump());
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("catastrophic backtracking"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(HostileFilesTest, AbsurdConfigSizesAreRefusedBeforeAnyAllocation) {
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", 64},
                      {"intermediate_size", 128},
                      {"num_hidden_layers", 2147483647},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"vocab_size", 1024},
                      {"max_position_embeddings", 2048},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0}};
  auto parsed = ParseModelConfig(c.dump(), "config.json");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("num_hidden_layers"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("over the limit"));
  c["num_hidden_layers"] = 2;
  c["vocab_size"] = 1 << 30;
  EXPECT_FALSE(ParseModelConfig(c.dump(), "config.json").ok());
  c["vocab_size"] = 1024;
  EXPECT_TRUE(ParseModelConfig(c.dump(), "config.json").ok());
}

TEST(HostileFilesTest, FifosAndFoldersAreRefusedNotWaitedOn) {
  testing::TestTempDir dir;
  const std::string fifo = dir.Sub("model.safetensors");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Opening a FIFO for reading used to block until a writer came.
  auto read = ReadFileToString(fifo);
  ASSERT_FALSE(read.ok());
  EXPECT_THAT(read.status().message(), HasSubstr("not a regular file"));
  auto checkpoint = Checkpoint::Open(dir.path().string());
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(checkpoint.status().message(), HasSubstr("not a regular file"));
  EXPECT_THAT(ReadFileToString(dir.path().string()).status().message(),
              HasSubstr("not a regular file"));
}

TEST(HostileFilesTest, OversizedFilesAreRefusedByTheirSize) {
  testing::TestTempDir dir;
  const std::string path = dir.Sub("config.json");
  {
    std::ofstream out(path);
    out << std::string(5 << 20, ' ');
  }
  auto loaded = LoadModelConfig(dir.path().string());
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("bytes, more than the"));
}

// ---- SentencePiece models and the prompt-convention files ----------------

// Protocol buffers' wire format, enough to write ModelProtos by hand.
std::string Varint(uint64_t v) {
  std::string out;
  do {
    out.push_back(static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0)));
    v >>= 7;
  } while (v != 0);
  return out;
}
std::string Field(int number, const std::string& bytes) {
  return Varint(static_cast<uint64_t>(number) << 3 | 2) + Varint(bytes.size()) + bytes;
}
std::string VarintField(int number, uint64_t v) {
  return Varint(static_cast<uint64_t>(number) << 3) + Varint(v);
}
std::string Piece(const std::string& text, int type) {
  return Field(1, Field(1, text) + VarintField(3, static_cast<uint64_t>(type)));
}
// A BPE model with <unk>, <s>, </s> and the pieces given.
std::string SentencePieceModelBytes(const std::string& more_pieces, int model_type = 2,
                                    bool byte_fallback = false) {
  return Piece("<unk>", 2) + Piece("<s>", 3) + Piece("</s>", 3) +
         Piece(
             "\xE2\x96\x81"
             "a",
             1) +
         more_pieces +
         Field(2, VarintField(3, model_type) + VarintField(35, byte_fallback ? 1 : 0));
}

absl::Status LoadTokenizerModel(const testing::TestTempDir& dir, const std::string& bytes) {
  std::ofstream(dir.Sub("tokenizer.model"), std::ios::binary) << bytes;
  return LoadModelTokenizer(dir.path().string(), kMaxTokenId).status();
}

TEST(HostileFilesTest, ATokenizerModelThatIsNoSentencePieceModelIsAClearError) {
  testing::TestTempDir dir;
  ASSERT_TRUE(LoadTokenizerModel(dir, SentencePieceModelBytes("")).ok());
  const std::string json = MinimalTokenizer().dump();
  struct Case {
    std::string bytes, why;
  } cases[] = {
      {"", "no pieces"},
      {"this is not a model at all", "malformed"},
      {json, "malformed"},
      {SentencePieceModelBytes("").substr(0, 15), "malformed"},  // cut inside a piece
      {Field(1, "\x0A\xFF\xFF\xFF\xFF\x0F"), "malformed"},       // a piece longer than the file
      {Varint(1 << 3 | 2) + Varint(uint64_t{1} << 62), "malformed"},
      {SentencePieceModelBytes(Piece("x", 9)), "type 9"},
      {SentencePieceModelBytes(Piece("<s>", 3)), "defined twice"},
      {SentencePieceModelBytes(Piece("", 1)), "is empty"},
      {SentencePieceModelBytes(Piece("<0x41>", 6)), "byte_fallback is false"},
      {SentencePieceModelBytes(Piece("<0xZZ>", 6), 2, true), "<0xAB>"},
      {SentencePieceModelBytes(Piece("<unk>", 2)), "defined twice"},
      {SentencePieceModelBytes("", /*model_type=*/1), "UNIGRAM"},
      {SentencePieceModelBytes(Field(3, Field(2, "charsmap"))), "precompiled_charsmap"},
  };
  for (const Case& c : cases) {
    const absl::Status status = LoadTokenizerModel(dir, c.bytes);
    ASSERT_FALSE(status.ok()) << c.why;
    EXPECT_THAT(status.message(), HasSubstr("tokenizer.model")) << c.why;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.why));
  }
}

TEST(HostileFilesTest, TokenizerConfigNamingTokensTheVocabularyLacksIsAClearError) {
  testing::TestTempDir dir;
  std::ofstream(dir.Sub("tokenizer.json")) << MinimalTokenizer().dump();
  struct Case {
    std::string config, why;
  } cases[] = {
      {R"({"bos_token": "<|no such token|>"})", "bos_token \"<|no such token|>\""},
      {R"({"eos_token": {"content": "</nope>"}})", "eos_token \"</nope>\""},
      {R"({"bos_token": 7})", "bos_token must be a string"},
      {R"({"add_bos_token": "yes"})", "add_bos_token must be true or false"},
      {R"({"add_bos_token": true})", "no bos_token"},
      {R"({"model_max_length": "long"})", "model_max_length"},
      {R"([1, 2])", "JSON object"},
      {R"({"bos_token": )", "not valid JSON"},
  };
  for (const Case& c : cases) {
    std::ofstream(dir.Sub("tokenizer_config.json")) << c.config;
    auto loaded = LoadModelTokenizer(dir.path().string(), kMaxTokenId);
    ASSERT_FALSE(loaded.ok()) << c.config;
    EXPECT_THAT(loaded.status().message(), HasSubstr("tokenizer_config.json")) << c.config;
    EXPECT_THAT(loaded.status().message(), HasSubstr(c.why));
  }
  // A post_processor naming an id beyond the vocabulary.
  std::filesystem::remove(dir.Sub("tokenizer_config.json"));
  nlohmann::json t = MinimalTokenizer();
  t["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<bos>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
      {"special_tokens", {{"<bos>", {{"ids", {99999}}}}}}};
  std::ofstream(dir.Sub("tokenizer.json")) << t.dump();
  auto loaded = LoadModelTokenizer(dir.path().string(), kMaxTokenId);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("post_processor"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("99999"));
  t["post_processor"] = {{"type", "MysteryProcessing"}};
  std::ofstream(dir.Sub("tokenizer.json")) << t.dump();
  loaded = LoadModelTokenizer(dir.path().string(), kMaxTokenId);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("MysteryProcessing"));
}

TEST(HostileFilesTest, GenerationConfigOfWrongTypesIsAClearError) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"temperature": "hot"})", "\"temperature\""},
      {R"({"temperature": -1})", "\"temperature\""},
      {R"({"top_p": 0})", "\"top_p\""},
      {R"({"top_p": 1.5})", "\"top_p\""},
      {R"({"top_k": -1})", "\"top_k\""},
      {R"({"top_k": 2.5})", "\"top_k\""},
      {R"({"eos_token_id": "2"})", "\"eos_token_id\""},
      {R"({"eos_token_id": [2, null]})", "\"eos_token_id\""},
      {R"({"eos_token_id": 99999999999})", "\"eos_token_id\""},
      {R"(["not", "an object"])", "not a JSON object"},
  };
  for (const auto& [text, why] : cases) {
    auto parsed = ParseGenerationConfig(text, "dir/generation_config.json");
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr("dir/generation_config.json")) << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr(why)) << text;
  }
  EXPECT_TRUE(ParseGenerationConfig(R"({"temperature": null, "top_k": 0})", "g").ok());
}

// MinimalTokenizer's text with `field` set to `node`, a JSON text spliced
// in: nlohmann's dump recurses, and a 15,000-deep value overflows the
// stack of a sanitizer build.
std::string WithNode(const std::string& field, const std::string& node) {
  nlohmann::json t = MinimalTokenizer();
  t.erase(field);
  std::string text = t.dump();
  return text.insert(1, "\"" + field + "\": " + node + ", ");
}

TEST(HostileFilesTest, DeepNestingIsRefusedNotAStackOverflow) {
  // 15,000 levels crashed the router and the ranks (stack overflow).
  constexpr int kDepth = 15000;
  std::string pre = R"({"type": "ByteLevel", "add_prefix_space": false})";
  for (int i = 0; i < kDepth; ++i) pre = R"({"type": "Sequence", "pretokenizers": [)" + pre + "]}";
  auto loaded = Tokenizer::FromJson(WithNode("pre_tokenizer", pre));
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("nested deeper than"));

  nlohmann::json t = MinimalTokenizer();
  const std::string groups = std::string(kDepth, '(') + "a" + std::string(kDepth, ')');
  t["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", groups}}}, {"behavior", "Isolated"}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
  loaded = Tokenizer::FromJson(t.dump());
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("groups nested deeper than"));

  testing::TestTempDir dir;
  std::string post = R"({"type": "ByteLevel"})";
  for (int i = 0; i < kDepth; ++i) post = R"({"type": "Sequence", "processors": [)" + post + "]}";
  std::ofstream(dir.Sub("tokenizer.json")) << WithNode("post_processor", post);
  auto model = LoadModelTokenizer(dir.path().string(), kMaxTokenId);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("post_processor: nested deeper than"));
}

nlohmann::json TinyConfig(const std::string& architecture) {
  return {{"architectures", {architecture}},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 1024},
          {"max_position_embeddings", 2048}};
}

// Parses `config` and expects an error naming config.json and `field`.
void ExpectRefused(const nlohmann::json& config, const std::string& field) {
  auto parsed = ParseModelConfig(config.dump(), "dir/config.json");
  ASSERT_FALSE(parsed.ok()) << config.dump();
  EXPECT_THAT(parsed.status().message(), HasSubstr("dir/config.json"));
  EXPECT_THAT(parsed.status().message(), HasSubstr(field));
}

TEST(HostileFilesTest, FP8BlocksOtherThan128AreRefused) {
  nlohmann::json c = TinyConfig("Qwen3ForCausalLM");
  c["quantization_config"] = {
      {"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
  EXPECT_TRUE(ParseModelConfig(c.dump(), "config.json").ok());
  for (const nlohmann::json& block :
       {nlohmann::json{64, 64}, nlohmann::json{128, 64}, nlohmann::json{128}, nlohmann::json("128"),
        nlohmann::json::array()}) {
    c["quantization_config"]["weight_block_size"] = block;
    ExpectRefused(c, "weight_block_size");
  }
  // Absent, transformers reads 128 x 128.
  c["quantization_config"].erase("weight_block_size");
  auto defaulted = ParseModelConfig(c.dump(), "config.json");
  ASSERT_TRUE(defaulted.ok()) << defaulted.status();
  EXPECT_EQ(defaulted->quantization->block, 128);
  // compressed-tensors' strategy "block" says the same in block_structure.
  const nlohmann::json fp8 = {{"num_bits", 8}, {"type", "float"}};
  nlohmann::json weights = fp8;
  weights["strategy"] = "block";
  weights["block_structure"] = {256, 256};
  c["quantization_config"] = {{"quant_method", "compressed-tensors"},
                              {"format", "float-quantized"},
                              {"config_groups", {{"group_0", {{"weights", weights}}}}}};
  ExpectRefused(c, "block_structure");
  c["quantization_config"]["config_groups"]["group_0"]["weights"]["block_structure"] = {128, 128};
  auto parsed = ParseModelConfig(c.dump(), "config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->quantization->block, 128);
  EXPECT_EQ(WeightScaleName(*parsed, "x.weight"), "x.weight_scale");
}

TEST(HostileFilesTest, NegativeOrNonIntegerWindowsAreRefused) {
  nlohmann::json c = TinyConfig("MistralForCausalLM");
  for (const nlohmann::json& window :
       {nlohmann::json(-16), nlohmann::json(0), nlohmann::json(16.5), nlohmann::json("16")}) {
    c["sliding_window"] = window;
    ExpectRefused(c, "sliding_window");
  }
  c = TinyConfig("Qwen2ForCausalLM");
  c["use_sliding_window"] = true;
  c["sliding_window"] = -1;
  ExpectRefused(c, "sliding_window");
  c["sliding_window"] = 16;
  c["max_window_layers"] = -3;
  ExpectRefused(c, "max_window_layers");
  c["max_window_layers"] = 1;
  c["layer_types"] = {"full_attention"};  // one entry for two layers
  ExpectRefused(c, "layer_types");
  c["layer_types"] = {"full_attention", "local"};
  ExpectRefused(c, "layer_types");
}

// Rewrites DIR/model.safetensors with tensor `name` replaced by `replacement`
// (or removed, when its name is empty).
void ReplaceTensor(const std::string& dir, const std::string& name,
                   const TensorToWrite& replacement) {
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::vector<TensorToWrite> tensors;
  for (const std::string& n : (*checkpoint)->Names()) {
    const TensorView* t = (*checkpoint)->Find(n);
    if (n == name) {
      if (!replacement.name.empty()) tensors.push_back(replacement);
      continue;
    }
    tensors.push_back({n, t->dtype, t->shape,
                       absl::string_view(reinterpret_cast<const char*>(t->data), t->nbytes)});
  }
  const std::string path = dir + "/model.safetensors", rewritten = path + ".new";
  ASSERT_TRUE(WriteSafetensors(rewritten, tensors).ok());
  checkpoint->reset();  // unmapped before the file is replaced
  ASSERT_EQ(std::rename(rewritten.c_str(), path.c_str()), 0);
}

// Opens DIR as a loader does and expects an error naming the safetensors
// file and `what`.
void ExpectLoadRefused(const std::string& dir, const std::string& what) {
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const absl::Status status = CheckCheckpointAgainstSchema(**checkpoint, *config);
  ASSERT_FALSE(status.ok()) << what;
  EXPECT_THAT(status.message(), HasSubstr("model.safetensors"));
  EXPECT_THAT(status.message(), HasSubstr(what));
}

class HostileCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MkModelOptions options;
    options.config = *PresetConfig("tiny-qwen3");
    options.dtype = DType::kF8E4M3;
    options.fp8_block = 128;
    ASSERT_TRUE(WriteRandomModel(dir_.Sub("model"), options).ok());
    auto config = LoadModelConfig(dir_.Sub("model"));
    ASSERT_TRUE(config.ok()) << config.status();
    auto checkpoint = Checkpoint::Open(dir_.Sub("model"));
    ASSERT_TRUE(checkpoint.ok());
    ASSERT_TRUE(CheckCheckpointAgainstSchema(**checkpoint, *config).ok());
  }
  std::string model() { return dir_.Sub("model"); }

  testing::TestTempDir dir_;
};

TEST_F(HostileCheckpointTest, BlockScalesOfTheWrongShapeAreRefused) {
  // gate_proj is 192 x 64: 2 x 1 blocks (the second partial).
  const std::string scale = "model.layers.1.mlp.gate_proj.weight_scale_inv";
  const float values[2] = {0.01f, 0.02f};
  const absl::string_view bytes(reinterpret_cast<const char*>(values), sizeof(values));
  ReplaceTensor(model(), scale, {scale, DType::kF32, {1, 2}, bytes});
  ExpectLoadRefused(model(), scale);
  ExpectLoadRefused(model(), "[2, 1]");
  ReplaceTensor(model(), scale, {scale, DType::kF32, {2}, bytes});
  ExpectLoadRefused(model(), scale);
  ReplaceTensor(model(), scale, {});
  ExpectLoadRefused(model(), scale);
}

TEST_F(HostileCheckpointTest, BlockScalesOfTheWrongDtypeAreRefused) {
  const std::string scale = "model.layers.0.self_attn.o_proj.weight_scale_inv";
  const uint8_t fp8[1] = {0x38};
  ReplaceTensor(model(), scale,
                {scale, DType::kF8E4M3, {1, 1}, {reinterpret_cast<const char*>(fp8), 1}});
  ExpectLoadRefused(model(), scale);
  ExpectLoadRefused(model(), "F8_E4M3");
  const uint16_t f16[1] = {0x3c00};
  ReplaceTensor(model(), scale,
                {scale, DType::kF16, {1, 1}, {reinterpret_cast<const char*>(f16), 2}});
  ExpectLoadRefused(model(), "F16");
}

TEST_F(HostileCheckpointTest, QNormOfTheWrongSizeIsRefused) {
  const std::string norm = "model.layers.0.self_attn.q_norm.weight";
  const float values[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  ReplaceTensor(model(), norm,
                {norm, DType::kF32, {8}, {reinterpret_cast<const char*>(values), sizeof(values)}});
  ExpectLoadRefused(model(), norm);
  ReplaceTensor(model(), norm, {});
  ExpectLoadRefused(model(), norm);
}

}  // namespace
}  // namespace shift
