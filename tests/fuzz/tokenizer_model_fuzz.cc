// A SentencePiece tokenizer.model of arbitrary bytes: a clear error or a
// tokenizer, never a crash, a hang or an allocation the file did not pay
// for. A tokenizer that loads encodes a fixed text to ids of its vocabulary
// and decodes them.
#include <cstdint>
#include <string_view>

#include "common/sentencepiece_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto tokenizer = shift::SentencePieceTokenizer::FromModel(bytes);
  if (!tokenizer.ok()) {
    if (tokenizer.status().message().empty()) shift::fuzz::Fail("an error without a message");
    return 0;
  }
  auto ids = (*tokenizer)->Encode("Hello, world! 123 \xC3\xA9t\xC3\xA9 \n\n  x [INST]", true);
  if (!ids.ok()) shift::fuzz::Fail("Encode of valid text failed");
  for (const int32_t id : *ids) {
    if (id < 0 || id >= (*tokenizer)->vocab_size()) shift::fuzz::Fail("id outside the vocabulary");
  }
  if (!(*tokenizer)->Decode(*ids).ok()) shift::fuzz::Fail("Decode of Encode's ids failed");
  return 0;
}
