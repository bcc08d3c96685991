// Tokenizer::Encode on arbitrary bytes with a real tokenizer of each kind
// (Llama 3's byte-level BPE, Mistral v3's SentencePiece): invalid UTF-8 is an
// error, never a crash; valid text decodes back to itself (for SentencePiece,
// text without its space symbol U+2581, which decodes as a space); no id is
// outside the vocabulary. The first byte chooses parse_special (bit 0) and
// the tokenizer (bit 1).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/tokenizer.h"
#include "common/unicode.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
std::unique_ptr<shift::Tokenizer> tokenizers[2];
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* files[2] = {"llama-bpe.tokenizer.json", "mistral-v3.tokenizer.model"};
  for (int i = 0; i < 2; ++i) {
    auto loaded = shift::Tokenizer::FromFile(shift::fuzz::SharedData() + "/tokenizers/" + files[i]);
    shift::fuzz::Require(loaded.status());
    tokenizers[i] = *std::move(loaded);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool parse_special = data[0] & 1;
  const shift::Tokenizer* tokenizer = tokenizers[(data[0] >> 1) & 1].get();
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
  const bool space_symbol = text.find("\xE2\x96\x81") != std::string::npos;
  if (!parse_special && !(tokenizer->drops_leading_space() && space_symbol)) {
    auto decoded = tokenizer->Decode(*ids);
    if (!decoded.ok() || *decoded != text) shift::fuzz::Fail("Decode(Encode(text)) != text");
  }
  return 0;
}
