// A SentencePiece tokenizer.model (Llama 2, Mistral, Gemma): the model's ids
// exactly as SentencePiece gives them (sentencepiece_model.h), with special
// tokens, decoding and the prompt conventions of a shift tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/sentencepiece_model.h"
#include "common/tokenizer.h"

namespace shift {

// - Pieces decode to their text with "▁" as a space; byte-fallback pieces
//   (<0xE2>) to their byte, so a character split across tokens is whole
//   again once its last byte arrives (IncrementalDetokenizer holds the rest).
// - Special tokens are the control pieces (<s>, </s>, [INST] ...) and the
//   unknown piece; they decode to their text (nothing with skip_special).
// - parse_special: special tokens written in the text are matched leftmost
//   longest; the text between them is encoded as a string of its own (with
//   SentencePiece's leading "▁"), as mistral-common and transformers' legacy
//   Llama tokenizer do.
// Encode is const and safe to call from several threads at once.
class SentencePieceTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromModel(
      std::string_view serialized);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool parse_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  // A piece as the model spells it ("▁Hello", "<0x0A>", "[INST]").
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string_view> TokenBytes(int32_t id) const override;
  bool IsSpecial(int32_t id) const override { return id >= 0 && id < vocab_size() && special_[id]; }
  const std::vector<int32_t>& special_ids() const override { return special_ids_; }
  const char* kind() const override { return "SentencePiece"; }
  bool drops_leading_space() const override { return dummy_prefix_; }
  std::optional<int32_t> model_bos_id() const override { return Id(model_->bos_id()); }
  std::optional<int32_t> model_eos_id() const override { return Id(model_->eos_id()); }

 private:
  SentencePieceTokenizer() = default;
  static std::optional<int32_t> Id(int32_t id) {
    if (id < 0) return std::nullopt;
    return id;
  }
  absl::Status EncodeText(std::string_view text, std::vector<int32_t>* ids) const;

  std::unique_ptr<SentencePieceModel> model_;
  std::vector<std::string> bytes_;  // by id: what the piece decodes to
  std::vector<bool> special_;       // by id
  std::vector<int32_t> special_ids_;
  absl::flat_hash_map<std::string, int32_t> piece_ids_;  // piece -> id
  // parse_special's matching: special token texts, their distinct lengths
  // (longest first) and first bytes.
  absl::flat_hash_map<std::string, int32_t> special_texts_;
  std::vector<size_t> special_lengths_;
  bool special_first_byte_[256] = {};
  bool dummy_prefix_ = false;
};

}  // namespace shift
