// A SentencePiece model (the tokenizer.model of Llama 2, Mistral, Gemma),
// read and applied natively: the ModelProto wire format, the identity
// normalizer and the BPE encoder, as SentencePiece 0.1.x does them.
// Debian's libsentencepiece cannot be linked into shift's processes: it
// exports the globals of its bundled flags library (FLAGS_help, FLAGS_version)
// and its bundled protobuf under the same names as Abseil's and gRPC's, so
// one overwrites the other at load. Tests check every id against the
// reference, Debian's python3-sentencepiece.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace shift {

class SentencePieceModel {
 public:
  // ModelProto.SentencePiece.Type's values.
  enum class PieceType : uint8_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };

  // The bytes of a tokenizer.model. InvalidArgument when they are not a
  // SentencePiece model (or one SentencePiece itself would refuse);
  // Unimplemented for a Unigram model or normalization rules
  // (precompiled_charsmap), naming them.
  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Parse(std::string_view serialized,
                                                                   int32_t max_pieces);

  // SentencePiece's ids for `text`, which must be valid UTF-8.
  std::vector<int32_t> Encode(std::string_view text) const;

  int32_t size() const { return static_cast<int32_t>(pieces_.size()); }
  const std::string& Piece(int32_t id) const { return pieces_[id].text; }
  PieceType Type(int32_t id) const { return pieces_[id].type; }
  int32_t bos_id() const { return bos_id_; }  // -1: none
  int32_t eos_id() const { return eos_id_; }  // -1: none
  bool add_dummy_prefix() const { return add_dummy_prefix_; }

  // The byte of a byte-fallback piece "<0xAB>" (two hex digits, either
  // case); -1 if `piece` is not one.
  static int FallbackByte(std::string_view piece);

 private:
  struct Entry {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  SentencePieceModel() = default;
  absl::Status Index();
  // Length of the longest user-defined piece at the start of `text`; 0 if none.
  size_t MatchUserDefined(std::string_view text) const;
  std::string Normalize(std::string_view text) const;
  void EncodeNormalized(std::string_view normalized, std::vector<int32_t>* ids) const;
  int32_t PieceToId(std::string_view piece) const;

  std::vector<Entry> pieces_;
  // SentencePiece's two maps: normal, user-defined and unused pieces (the
  // ones merges may form), and the reserved ones (control, unknown, byte).
  absl::flat_hash_map<std::string, int32_t> mergeable_;
  absl::flat_hash_map<std::string, int32_t> reserved_;
  std::vector<size_t> user_defined_lengths_;  // distinct, longest first
  absl::flat_hash_map<std::string, int32_t> user_defined_;
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t byte_ids_[256];
  bool byte_fallback_ = false;
  bool whitespace_as_suffix_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
};

}  // namespace shift
