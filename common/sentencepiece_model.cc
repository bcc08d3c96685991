#include "common/sentencepiece_model.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/unicode.h"

namespace shift {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Protocol buffers' wire format, read with every length checked.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}

  bool done() const { return pos_ >= data_.size(); }

  // The next field's number and wire type.
  bool Next(uint32_t* field, uint32_t* wire) {
    uint64_t key;
    if (!Varint(&key) || key >> 32 != 0) return false;
    *field = static_cast<uint32_t>(key >> 3);
    *wire = static_cast<uint32_t>(key & 7);
    return *field != 0;
  }
  bool Varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
      *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool Bytes(std::string_view* out) {
    uint64_t length;
    if (!Varint(&length) || length > data_.size() - pos_) return false;
    *out = data_.substr(pos_, length);
    pos_ += length;
    return true;
  }
  bool Fixed32(uint32_t* out) {
    if (data_.size() - pos_ < 4) return false;
    std::memcpy(out, data_.data() + pos_, 4);  // little-endian, as the host
    pos_ += 4;
    return true;
  }
  // Passes over a field of a type this reader does not keep.
  bool Skip(uint32_t wire) {
    uint64_t ignored;
    std::string_view bytes;
    uint32_t fixed;
    switch (wire) {
      case 0:
        return Varint(&ignored);
      case 1:
        return Fixed32(&fixed) && Fixed32(&fixed);
      case 2:
        return Bytes(&bytes);
      case 5:
        return Fixed32(&fixed);
      default:  // groups are not used by ModelProto
        return false;
    }
  }
  size_t position() const { return pos_; }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

absl::Status Malformed(std::string_view what, size_t at) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", View(what), " (protobuf wire format) near byte ", at));
}

// Calls `field(number, wire, reader)` for each field of a message; it
// returns false when it did not consume the field (then it is skipped).
absl::Status ForEachField(
    std::string_view data, std::string_view what,
    const std::function<absl::Status(uint32_t, uint32_t, WireReader&, bool*)>& field) {
  WireReader reader(data);
  while (!reader.done()) {
    uint32_t number, wire;
    if (!reader.Next(&number, &wire)) return Malformed(what, reader.position());
    bool consumed = false;
    SHIFT_RETURN_IF_ERROR(field(number, wire, reader, &consumed));
    if (!consumed && !reader.Skip(wire)) return Malformed(what, reader.position());
  }
  return absl::OkStatus();
}

// Reads a field of the expected wire type into a string, bool, enum or float.
bool ReadString(WireReader& r, uint32_t wire, std::string* out) {
  std::string_view bytes;
  if (wire != 2 || !r.Bytes(&bytes)) return false;
  out->assign(bytes);
  return true;
}
bool ReadVarint(WireReader& r, uint32_t wire, uint64_t* out) { return wire == 0 && r.Varint(out); }
bool ReadFloat(WireReader& r, uint32_t wire, float* out) {
  uint32_t bits;
  if (wire != 5 || !r.Fixed32(&bits)) return false;
  std::memcpy(out, &bits, 4);
  return true;
}

size_t Utf8Length(std::string_view text) {
  const Utf8Step step = DecodeUtf8(text);
  return step.kind == Utf8Step::kOk ? step.length : 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Parse(
    std::string_view serialized, int32_t max_pieces) {
  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel());
  int64_t model_type = 1;  // TrainerSpec's default: UNIGRAM
  std::string bos_piece = "<s>", eos_piece = "</s>", charsmap, denormalizer_charsmap;
  auto piece = [&](uint32_t number, uint32_t wire, WireReader& r, bool* consumed) {
    Entry& p = m->pieces_.back();
    uint64_t type;
    if (number == 1) *consumed = ReadString(r, wire, &p.text);
    if (number == 2) *consumed = ReadFloat(r, wire, &p.score);
    if (number == 3 && (*consumed = ReadVarint(r, wire, &type))) {
      if (type < 1 || type > 6) {
        return absl::InvalidArgumentError(
            absl::StrCat("piece ", m->pieces_.size() - 1, " has type ", type, ", not 1..6"));
      }
      p.type = static_cast<PieceType>(type);
    }
    return absl::OkStatus();
  };
  auto trainer = [&](uint32_t number, uint32_t wire, WireReader& r, bool* consumed) {
    uint64_t value;
    if (number == 3 && (*consumed = ReadVarint(r, wire, &value))) model_type = value;
    if (number == 24 && (*consumed = ReadVarint(r, wire, &value))) {
      m->whitespace_as_suffix_ = value != 0;
    }
    if (number == 35 && (*consumed = ReadVarint(r, wire, &value))) m->byte_fallback_ = value != 0;
    if (number == 46) *consumed = ReadString(r, wire, &bos_piece);
    if (number == 47) *consumed = ReadString(r, wire, &eos_piece);
    return absl::OkStatus();
  };
  auto normalizer = [&](std::string* map) {
    return [&m, map](uint32_t number, uint32_t wire, WireReader& r, bool* consumed) {
      uint64_t value;
      if (number == 2) *consumed = ReadString(r, wire, map);
      if (map != nullptr && number == 3 && (*consumed = ReadVarint(r, wire, &value))) {
        m->add_dummy_prefix_ = value != 0;
      }
      if (map != nullptr && number == 4 && (*consumed = ReadVarint(r, wire, &value))) {
        m->remove_extra_whitespaces_ = value != 0;
      }
      if (map != nullptr && number == 5 && (*consumed = ReadVarint(r, wire, &value))) {
        m->escape_whitespaces_ = value != 0;
      }
      return absl::OkStatus();
    };
  };
  std::string denormalizer_unused;
  SHIFT_RETURN_IF_ERROR(ForEachField(
      serialized, "ModelProto",
      [&](uint32_t number, uint32_t wire, WireReader& r, bool* consumed) -> absl::Status {
        if (number != 1 && number != 2 && number != 3 && number != 5) return absl::OkStatus();
        std::string_view body;
        if (wire != 2 || !r.Bytes(&body)) return Malformed("ModelProto", r.position());
        *consumed = true;
        if (number == 1) {
          if (static_cast<int64_t>(m->pieces_.size()) >= max_pieces) {
            return absl::InvalidArgumentError(
                absl::StrCat("the model has more than ", max_pieces, " pieces"));
          }
          m->pieces_.emplace_back();
          return ForEachField(body, "SentencePiece", piece);
        }
        if (number == 2) return ForEachField(body, "TrainerSpec", trainer);
        if (number == 3) return ForEachField(body, "NormalizerSpec", normalizer(&charsmap));
        return ForEachField(body, "denormalizer_spec", normalizer(&denormalizer_charsmap));
      }));
  if (m->pieces_.empty()) return absl::InvalidArgumentError("no pieces");
  if (model_type != 2) {
    return absl::UnimplementedError(absl::StrCat(
        "only BPE SentencePiece models are supported (Llama 2, Mistral, Gemma); this one's "
        "model_type is ",
        model_type == 1 ? "UNIGRAM" : absl::StrCat(model_type)));
  }
  if (!charsmap.empty() || !denormalizer_charsmap.empty()) {
    return absl::UnimplementedError(
        "SentencePiece normalization rules (a precompiled_charsmap, e.g. nmt_nfkc) are not "
        "supported; only the identity normalizer is");
  }
  SHIFT_RETURN_IF_ERROR(m->Index());
  for (int32_t id = 0; id < m->size(); ++id) {
    if (m->pieces_[id].text == bos_piece) m->bos_id_ = id;
    if (m->pieces_[id].text == eos_piece) m->eos_id_ = id;
  }
  return m;
}

// The checks and maps of SentencePiece's ModelInterface::InitializePieces.
absl::Status SentencePieceModel::Index() {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (int32_t id = 0; id < size(); ++id) {
    const Entry& p = pieces_[id];
    if (p.text.empty()) return absl::InvalidArgumentError(absl::StrCat("piece ", id, " is empty"));
    if (FindInvalidUtf8(p.text) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("piece ", id, " is not valid UTF-8"));
    }
    const bool mergeable = p.type == PieceType::kNormal || p.type == PieceType::kUserDefined ||
                           p.type == PieceType::kUnused;
    if (!(mergeable ? mergeable_ : reserved_).try_emplace(p.text, id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("piece ", id, " \"", p.text, "\" is defined twice"));
    }
    if (p.type == PieceType::kUserDefined) {
      user_defined_.try_emplace(p.text, id);
      user_defined_lengths_.push_back(p.text.size());
    }
    if (p.type == PieceType::kUnknown) {
      if (unk_id_ >= 0) return absl::InvalidArgumentError("the unknown piece is defined twice");
      unk_id_ = id;
    }
    if (p.type == PieceType::kByte) {
      if (!byte_fallback_) {
        return absl::InvalidArgumentError(
            absl::StrCat("byte piece ", id, " is found although byte_fallback is false"));
      }
      const int value = FallbackByte(p.text);
      if (value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("byte piece ", id, " \"", p.text, "\" is not of the form <0xAB>"));
      }
      byte_ids_[value] = id;
    }
  }
  if (unk_id_ < 0) return absl::InvalidArgumentError("the model defines no unknown piece");
  std::sort(user_defined_lengths_.begin(), user_defined_lengths_.end(), std::greater<>());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());
  return absl::OkStatus();
}

int SentencePieceModel::FallbackByte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (const char c : piece.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

size_t SentencePieceModel::MatchUserDefined(std::string_view text) const {
  for (const size_t length : user_defined_lengths_) {
    if (length <= text.size() && user_defined_.contains(View(text.substr(0, length)))) {
      return length;
    }
  }
  return 0;
}

int32_t SentencePieceModel::PieceToId(std::string_view piece) const {
  if (const auto it = reserved_.find(View(piece)); it != reserved_.end()) return it->second;
  if (const auto it = mergeable_.find(View(piece)); it != mergeable_.end()) return it->second;
  return unk_id_;
}

// Normalizer::Normalize without normalization rules: spaces become "▁", one
// is added in front (add_dummy_prefix), runs of spaces are squeezed and the
// ends trimmed (remove_extra_whitespaces); user-defined pieces pass as they
// are.
std::string SentencePieceModel::Normalize(std::string_view text) const {
  std::string out;
  const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : " ";
  if (!whitespace_as_suffix_ && remove_extra_whitespaces_) {
    while (!text.empty() && text[0] == ' ' && MatchUserDefined(text) == 0) text.remove_prefix(1);
  }
  if (text.empty()) return out;
  if (!whitespace_as_suffix_ && add_dummy_prefix_) out.append(space);
  bool previous_space = remove_extra_whitespaces_;
  while (!text.empty()) {
    const size_t matched = MatchUserDefined(text);
    const size_t length = matched > 0 ? matched : Utf8Length(text);
    std::string_view part = text.substr(0, length);
    text.remove_prefix(length);
    while (previous_space && !part.empty() && part[0] == ' ') part.remove_prefix(1);
    if (!part.empty()) {
      for (const char c : part) {
        if (c == ' ' && escape_whitespaces_) {
          out.append(kSpaceSymbol);
        } else {
          out.push_back(c);
        }
      }
      previous_space = part.back() == ' ';
    }
    if (!remove_extra_whitespaces_) previous_space = false;
  }
  if (remove_extra_whitespaces_) {
    while (out.ends_with(space)) out.resize(out.size() - space.size());
  }
  if (whitespace_as_suffix_ && add_dummy_prefix_) out.append(space);
  return out;
}

std::vector<int32_t> SentencePieceModel::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  const std::string normalized = Normalize(text);
  if (!normalized.empty()) EncodeNormalized(normalized, &ids);
  return ids;
}

// bpe::Model::Encode: characters (user-defined pieces whole and frozen),
// then the adjacent pair whose union is the highest-scoring piece merges
// first (leftmost on ties); unused pieces are split back into what formed
// them; what is left unknown falls back to byte pieces, or without byte
// fallback becomes one unknown token per run.
void SentencePieceModel::EncodeNormalized(std::string_view normalized,
                                          std::vector<int32_t>* ids) const {
  struct Symbol {
    int prev, next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    int left, right;
    float score;
    size_t size;
  };
  auto later = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(later)> agenda(later);
  absl::flat_hash_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  std::vector<Symbol> symbols;
  for (std::string_view rest = normalized; !rest.empty();) {
    const size_t matched = MatchUserDefined(rest);
    const size_t length = matched > 0 ? matched : Utf8Length(rest);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back(
        {index - 1, length < rest.size() ? index + 1 : -1, matched > 0, rest.substr(0, length)});
    rest.remove_prefix(length);
  }
  auto add_pair = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view piece(symbols[left].piece.data(),
                                 symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = mergeable_.find(View(piece));
    if (it == mergeable_.end()) return;
    agenda.push({left, right, pieces_[it->second].score, piece.size()});
    if (pieces_[it->second].type == PieceType::kUnused) {
      rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i)
    add_pair(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale: one side has merged since.
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.size) {
      continue;
    }
    left.piece = std::string_view(left.piece.data(), top.size);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    add_pair(left.prev, top.left);
    add_pair(top.left, left.next);
  }
  const size_t first = ids->size();
  std::function<void(std::string_view)> emit = [&](std::string_view piece) {
    const auto found = mergeable_.find(View(piece));
    if (found != mergeable_.end() && pieces_[found->second].type == PieceType::kUnused) {
      if (const auto split = rev_merge.find(piece); split != rev_merge.end()) {
        emit(split->second.first);
        emit(split->second.second);
        return;
      }
    }
    const int32_t id = PieceToId(piece);
    if (id != unk_id_ || !byte_fallback_) {
      // A run of unknown pieces is one unknown token.
      if (id != unk_id_ || ids->size() == first || ids->back() != unk_id_) ids->push_back(id);
      return;
    }
    for (const char c : piece) {
      const int32_t byte = byte_ids_[static_cast<unsigned char>(c)];
      ids->push_back(byte >= 0 ? byte : unk_id_);
    }
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) emit(symbols[i].piece);
}

}  // namespace shift
