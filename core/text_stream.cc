#include "core/text_stream.h"

#include <algorithm>

namespace shift {
namespace {

// The largest cut <= `at` that does not split a UTF-8 character of `s`.
size_t CharBoundary(const std::string& s, size_t at) {
  while (at > 0 && at < s.size() && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
  return at;
}

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : detokenizer_(tokenizer, /*skip_special=*/true) {
  for (std::string& stop : stop_strings) {
    if (stop.empty()) continue;
    longest_stop_ = std::max(longest_stop_, stop.size());
    stops_.push_back(std::move(stop));
  }
}

TextStream::Piece TextStream::Append(int32_t token_id) {
  Piece piece;
  if (stopped_) return piece;
  auto text = detokenizer_.Append(token_id);
  if (text.ok()) text_ += *text;
  // Released text was followed by enough text to rule out a stop string
  // starting in it, so a match starts in the held-back part or the new text.
  const size_t search_from = streamed_;
  size_t match = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t at = text_.find(stop, search_from);
    if (at != std::string::npos && (match == std::string::npos || at < match)) {
      match = at;
      piece.stop_string = stop;
    }
  }
  if (match != std::string::npos) {
    stopped_ = true;
    piece.stopped = true;
    if (match > streamed_) piece.text = text_.substr(streamed_, match - streamed_);
    streamed_ = text_.size();
    return piece;
  }
  // Hold back a tail that could still grow into a stop string.
  size_t release = text_.size();
  if (longest_stop_ > 0) {
    release = text_.size() >= longest_stop_ - 1 ? text_.size() - (longest_stop_ - 1) : 0;
    release = CharBoundary(text_, std::max(release, streamed_));
  }
  if (release > streamed_) {
    piece.text = text_.substr(streamed_, release - streamed_);
    streamed_ = release;
  }
  return piece;
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  text_ += detokenizer_.Finish();
  std::string rest = text_.substr(streamed_);
  streamed_ = text_.size();
  return rest;
}

}  // namespace shift
