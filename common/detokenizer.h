// Streaming detokenization: turns generated token ids into text deltas that
// are always whole UTF-8 characters, for token-by-token streaming responses
// where one character (an emoji, a CJK ideograph) may span several tokens.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer.h"

namespace shift {

// Holds back the trailing bytes of a character not yet complete. Bytes that
// can never start or continue a valid character are emitted as U+FFFD (one per
// maximal invalid subpart, as WHATWG and Python's errors="replace" do), so
// every delta is valid UTF-8. Whenever the full Decode of the ids is valid
// UTF-8, the concatenation of all deltas and Finish() equals it exactly.
class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object. With skip_special, special tokens
  // contribute nothing (as Decode's skip_special).
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // Text completed by token `id`; may be empty. InvalidArgument for an id not
  // in the vocabulary (the state is then unchanged).
  absl::StatusOr<std::string> Append(int32_t id);

  // Flushes the held-back bytes (an incomplete character becomes U+FFFD) and
  // resets, so the object can start a new stream.
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // bytes of an incomplete trailing character
};

}  // namespace shift
