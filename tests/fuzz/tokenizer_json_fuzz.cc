// Tokenizer::FromJson on arbitrary bytes: a clear error or a tokenizer,
// never a crash, a hang or an allocation the file did not pay for. A
// tokenizer that loads encodes and decodes a fixed text.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto tokenizer = shift::Tokenizer::FromJson(json);
  if (!tokenizer.ok()) {
    if (tokenizer.status().message().empty()) shift::fuzz::Fail("an error without a message");
    return 0;
  }
  auto ids = (*tokenizer)->Encode("Hello, world! 123 \xC3\xA9t\xC3\xA9 \n\n  x");
  if (!ids.ok()) return 0;  // a pattern over its step budget is an error too
  if (!(*tokenizer)->Decode(*ids).ok()) shift::fuzz::Fail("Decode of Encode's ids failed");
  return 0;
}
