#include "common/sentencepiece_tokenizer.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "common/unicode.h"

namespace shift {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 "▁"

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromModel(
    std::string_view serialized) {
  auto parsed = SentencePieceModel::Parse(serialized, kMaxTokenId);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(), absl::StrCat("not a SentencePiece model we load: ",
                                                             parsed.status().message()));
  }
  std::unique_ptr<SentencePieceModel> model = *std::move(parsed);
  std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  const int32_t n = model->size();
  t->bytes_.resize(n);
  t->special_.resize(n, false);
  for (int32_t id = 0; id < n; ++id) {
    std::string piece = model->Piece(id);
    const SentencePieceModel::PieceType type = model->Type(id);
    if (type == SentencePieceModel::PieceType::kControl ||
        type == SentencePieceModel::PieceType::kUnknown) {
      t->special_[id] = true;
      t->special_ids_.push_back(id);
      t->bytes_[id] = piece;
      if (!piece.empty() && FindInvalidUtf8(piece) == std::string::npos) {
        t->special_first_byte_[static_cast<unsigned char>(piece[0])] = true;
        if (t->special_texts_.try_emplace(piece, id).second) {
          t->special_lengths_.push_back(piece.size());
        }
      }
    } else if (const int byte = SentencePieceModel::FallbackByte(piece);
               type == SentencePieceModel::PieceType::kByte && byte >= 0) {
      t->bytes_[id] = std::string(1, static_cast<char>(byte));
    } else {
      t->bytes_[id] = absl::StrReplaceAll(piece, {{View(kMetaspace), " "}});
    }
    t->piece_ids_.try_emplace(std::move(piece), id);
  }
  std::sort(t->special_lengths_.begin(), t->special_lengths_.end(), std::greater<>());
  t->special_lengths_.erase(std::unique(t->special_lengths_.begin(), t->special_lengths_.end()),
                            t->special_lengths_.end());
  t->model_ = std::move(model);
  t->dummy_prefix_ = t->model_->add_dummy_prefix();
  return t;
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(std::string_view text,
                                                                    bool parse_special) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("input is not valid UTF-8 at byte ", bad));
  }
  std::vector<int32_t> ids;
  if (!parse_special) {
    SHIFT_RETURN_IF_ERROR(EncodeText(text, &ids));
    return ids;
  }
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t pos = 0; pos < text.size();) {
    std::optional<std::pair<int32_t, size_t>> match;  // (id, length)
    if (special_first_byte_[static_cast<unsigned char>(text[pos])]) {
      for (const size_t length : special_lengths_) {
        if (length > text.size() - pos) continue;
        const auto it = special_texts_.find(View(text.substr(pos, length)));
        if (it != special_texts_.end()) {
          match = {{it->second, length}};
          break;
        }
      }
    }
    if (!match) {
      ++pos;
      continue;
    }
    SHIFT_RETURN_IF_ERROR(EncodeText(text.substr(segment, pos - segment), &ids));
    ids.push_back(match->first);
    segment = pos = pos + match->second;
  }
  SHIFT_RETURN_IF_ERROR(EncodeText(text.substr(segment), &ids));
  return ids;
}

absl::Status SentencePieceTokenizer::EncodeText(std::string_view text,
                                                std::vector<int32_t>* ids) const {
  const std::vector<int32_t> encoded = model_->Encode(text);
  ids->insert(ids->end(), encoded.begin(), encoded.end());
  return absl::OkStatus();
}

std::optional<int32_t> SentencePieceTokenizer::TokenToId(std::string_view token) const {
  const auto it = piece_ids_.find(View(token));
  if (it == piece_ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string_view> SentencePieceTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::nullopt;
  return bytes_[id];
}

}  // namespace shift
