// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (GPT-2,
// Llama 3, Qwen 2, DeepSeek): added/special tokens, pre-tokenization, the
// merge loop, and decoding ids back to the exact bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/pretokenizer.h"
#include "common/tokenizer.h"

namespace shift {

// What is supported from tokenizer.json:
// - model: BPE with a byte-level vocabulary (a ByteLevel pre-tokenizer or
//   decoder must be present), merges as "a b" strings or ["a", "b"] arrays,
//   ignore_merges. Other model types, byte_fallback, continuing_subword_prefix
//   and end_of_word_suffix are Unimplemented; dropout is ignored (inference).
// - normalizer: null only; any other type is Unimplemented (naming it) rather
//   than silently tokenizing differently.
// - added_tokens: matched in the raw text before pre-tokenization, leftmost
//   longest. Non-special ones always; special ones only with parse_special.
//   lstrip/rstrip absorb adjacent ASCII whitespace; single_word requires no
//   letter, number or '_' right before or after. `normalized` has no effect
//   since no normalizer is supported. An added token decodes to its content.
// - post_processor: read into the prompt template (PostProcessorTemplate in
//   tokenizer.h) that LoadModelTokenizer applies; Encode never adds BOS/EOS.
// Encode is const and safe to call from several threads at once.
class BpeTokenizer : public Tokenizer {
 public:
  // Unimplemented, naming what to provide, for a tokenizer.json of another
  // kind (SentencePiece's Metaspace and byte fallback, WordPiece, Unigram).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(std::string_view json_text);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool parse_special = false) const override;
  // Max id + 1 over the vocabulary and the added tokens.
  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  // An added token's content or a vocabulary key in the byte-level alphabet
  // (e.g. "Ġhello").
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string_view> TokenBytes(int32_t id) const override;
  bool IsSpecial(int32_t id) const override {
    return id >= 0 && id < vocab_size() && kinds_[id] == Kind::kSpecial;
  }
  const std::vector<int32_t>& special_ids() const override { return special_ids_; }
  const char* kind() const override { return "byte-level BPE"; }

  const PreTokenizer& pre_tokenizer() const { return pre_tokenizer_; }
  // What tokenizer.json's post_processor puts around a text (empty when
  // there is none).
  const PromptTemplate& post_processor_template() const { return post_template_; }

 private:
  enum class Kind : uint8_t { kNone, kModel, kAdded, kSpecial };

  struct AddedToken {
    int32_t id;
    bool special, lstrip, rstrip, single_word;
  };
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  BpeTokenizer() = default;
  absl::Status Load(std::string_view json_text);
  absl::Status LoadModel(const nlohmann::json& model);
  absl::Status LoadAddedTokens(const nlohmann::json& added);

  // Longest enabled added token starting at `pos`: (index into added_, byte
  // length), or nullopt.
  std::optional<std::pair<int, size_t>> MatchAdded(std::string_view text, size_t pos,
                                                   bool parse_special) const;
  absl::Status EncodeText(std::string_view text, std::vector<int32_t>* ids) const;
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;
  void Bpe(std::string_view piece, std::vector<int32_t>* ids) const;

  PreTokenizer pre_tokenizer_;
  PromptTemplate post_template_;
  bool ignore_merges_ = false;

  std::vector<std::string> bytes_;  // by id: raw bytes
  std::vector<Kind> kinds_;         // by id
  std::vector<int32_t> special_ids_;
  absl::flat_hash_map<std::string, int32_t> model_ids_;  // raw bytes -> id (model vocab)
  int32_t byte_ids_[256];                                // single-byte tokens
  absl::flat_hash_map<uint64_t, Merge> merges_;          // (left << 32 | right) -> merge

  std::vector<AddedToken> added_;
  absl::flat_hash_map<std::string, int32_t> added_ids_;  // content -> id
  // Byte trie over added token contents: edges keyed (node << 8 | byte).
  absl::flat_hash_map<uint64_t, int32_t> trie_edges_;
  std::vector<int32_t> trie_terminal_;  // by node: index into added_, or -1
  bool added_first_byte_[256] = {};

  // Per-piece BPE results; cleared when full so memory stays bounded.
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace shift
