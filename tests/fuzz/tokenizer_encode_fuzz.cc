// Tokenizer::Encode on arbitrary bytes with a real tokenizer (Llama 3's):
// invalid UTF-8 is an error, never a crash; valid text decodes back to
// itself; no id is outside the vocabulary. The first byte chooses
// parse_special.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/tokenizer.h"
#include "common/unicode.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
std::unique_ptr<shift::Tokenizer> tokenizer;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto loaded = shift::Tokenizer::FromFile(shift::fuzz::SharedData() +
                                           "/tokenizers/llama-bpe.tokenizer.json");
  shift::fuzz::Require(loaded.status());
  tokenizer = *std::move(loaded);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool parse_special = data[0] & 1;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto ids = tokenizer->Encode(text, parse_special);
  const bool valid = shift::FindInvalidUtf8(text) == std::string::npos;
  if (ids.ok() != valid) {
    shift::fuzz::Fail("Encode succeeded on invalid UTF-8 or failed on valid text");
  }
  if (!ids.ok()) return 0;
  for (int32_t id : *ids) {
    if (id < 0 || id >= tokenizer->vocab_size()) shift::fuzz::Fail("id outside the vocabulary");
  }
  if (!parse_special) {
    auto decoded = tokenizer->Decode(*ids);
    if (!decoded.ok() || *decoded != text) shift::fuzz::Fail("Decode(Encode(text)) != text");
  }
  return 0;
}
