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
  // contribute nothing (as Decode's skip_special). With at_text_start the ids
  // begin a text, so the deltas add up to Decode of them: a SentencePiece
  // tokenizer's leading space is dropped. Generated tokens follow a prompt,
  // so a server streams them without it (their leading space is text).
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = false,
                                  bool at_text_start = false)
      : tokenizer_(tokenizer),
        skip_special_(skip_special),
        drop_space_(at_text_start && tokenizer.drops_leading_space()) {}

  // Text completed by token `id`; may be empty. InvalidArgument for an id not
  // in the vocabulary (the state is then unchanged).
  absl::StatusOr<std::string> Append(int32_t id);

  // Flushes the held-back bytes (an incomplete character becomes U+FFFD) and
  // resets, so the object can start a new stream (not at a text start).
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool drop_space_;      // the first byte still to come is a droppable space
  std::string pending_;  // bytes of an incomplete trailing character
};

}  // namespace shift
