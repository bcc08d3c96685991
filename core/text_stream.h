// The text side of one request's output: generated token ids become text
// deltas (whole UTF-8 characters, through the incremental detokenizer), and
// stop strings end the generation. Text that could be the start of a stop
// string is held back until it cannot be, so a stop string is never
// streamed; on a match the text before it is released and the rest dropped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/detokenizer.h"
#include "common/tokenizer.h"

namespace shift {

class TextStream {
 public:
  // `tokenizer` must outlive this object.
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  struct Piece {
    std::string text;         // to stream now
    bool stopped = false;     // a stop string matched: generation ends
    std::string stop_string;  // which one
  };
  // The text of one more token. Ids outside the tokenizer (the embedding may
  // be larger than the vocabulary) contribute no text.
  Piece Append(int32_t token_id);
  // The held-back text, at the end of a generation that did not stop on a
  // string.
  std::string Finish();

 private:
  IncrementalDetokenizer detokenizer_;
  std::vector<std::string> stops_;
  size_t longest_stop_ = 0;
  std::string text_;     // all text generated so far
  size_t streamed_ = 0;  // bytes of text_ already released
  bool stopped_ = false;
};

}  // namespace shift
