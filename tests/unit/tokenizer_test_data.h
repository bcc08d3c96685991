// Reads the shared tokenizer test data (tokenizer.json files, the 46 test
// strings and their expected ids) for the tokenizer tests and benchmark. The
// folder comes from SHIFT_SHARED_DATA, else ../shared/data.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/tokenizer.h"

namespace shift::testdata {

inline constexpr const char* kVocabularies[] = {"gpt-2", "deepseek-llm", "llama-bpe", "qwen2"};

inline std::string TokenizerDir() {
  const char* env = std::getenv("SHIFT_SHARED_DATA");
  return std::string(env != nullptr ? env : "../shared/data") + "/tokenizers";
}

inline std::string TokenizerPath(const std::string& vocab) {
  return TokenizerDir() + "/" + vocab + ".tokenizer.json";
}

inline std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The test strings: each is followed by "\n__ggml_vocab_test__\n", so the
// piece after the last separator is empty and not a test string.
inline std::optional<std::vector<std::string>> TestStrings() {
  auto data = ReadFile(TokenizerDir() + "/test-strings.txt");
  if (!data) return std::nullopt;
  std::vector<std::string> strings = absl::StrSplit(*data, "\n__ggml_vocab_test__\n");
  strings.pop_back();
  return strings;
}

// One id list per line; an empty line is the empty list.
inline std::optional<std::vector<std::vector<int32_t>>> ExpectedIds(const std::string& vocab) {
  auto data = ReadFile(TokenizerDir() + "/" + vocab + ".expected-ids.txt");
  if (!data) return std::nullopt;
  std::vector<std::string> lines = absl::StrSplit(*data, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::vector<std::vector<int32_t>> out;
  for (const std::string& line : lines) {
    std::vector<int32_t> ids;
    for (const absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      int32_t id = -1;
      if (!absl::SimpleAtoi(field, &id)) return std::nullopt;
      ids.push_back(id);
    }
    out.push_back(std::move(ids));
  }
  return out;
}

// Tokenizers are loaded once per program and shared: parsing the large JSON
// files is the slow part of the tests.
inline absl::StatusOr<const Tokenizer*> LoadTokenizer(const std::string& vocab) {
  static auto* loaded = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  std::unique_ptr<Tokenizer>& slot = (*loaded)[vocab];
  if (!slot) {
    SHIFT_ASSIGN_OR_RETURN(slot, Tokenizer::FromFile(TokenizerPath(vocab)));
  }
  return slot.get();
}

}  // namespace shift::testdata

// Skips the current GoogleTest test when the shared data folder is absent.
#define SHIFT_SKIP_WITHOUT_TOKENIZER_DATA()                                                    \
  if (!::shift::testdata::ReadFile(::shift::testdata::TokenizerDir() + "/test-strings.txt")) { \
    GTEST_SKIP() << "shared data not found at " << ::shift::testdata::TokenizerDir();          \
  }
