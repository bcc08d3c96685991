// Model files a hostile or broken source could hand the loaders: each is a
// clear error, quickly, never a crash, a hang or a huge allocation. These
// used to abort (std::length_error, std::bad_alloc after 17 s) or hang.
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <fstream>
#include <string>

#include "common/file_util.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

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

}  // namespace
}  // namespace shift
