// The tokenizer of a model directory, whichever kind it ships: byte-level BPE
// from a Hugging Face tokenizer.json (bpe_tokenizer.h) or a SentencePiece
// tokenizer.model (sentencepiece_tokenizer.h), with the prompt conventions
// of the model's own files (BOS/EOS from tokenizer_config.json and
// tokenizer.json's post_processor).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"

namespace shift {

// Token ids a tokenizer may use: 0 .. kMaxTokenId-1 (16.7M, the vocab_size
// limit of config.json).
inline constexpr int32_t kMaxTokenId = int32_t{1} << 24;

// What a text prompt gets around its tokens when special tokens are added
// (add_special_tokens): the `single` template of transformers' encode.
struct PromptTemplate {
  std::vector<int32_t> prefix;  // e.g. {BOS}
  std::vector<int32_t> suffix;  // e.g. {EOS} when add_eos_token
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // A byte-level BPE tokenizer.json's text (no prompt template).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text);
  // One tokenizer file alone: a tokenizer.json, or a SentencePiece model (any
  // other name, e.g. tokenizer.model). No prompt template; errors name `path`.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);

  // Token ids of `text`, without BOS/EOS. With parse_special, special tokens
  // written in the text (like <|begin_of_text|> or [INST]) are recognised.
  // Invalid UTF-8 is InvalidArgument whose message gives the byte offset of
  // the first bad byte ("... at byte N").
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool parse_special = false) const = 0;

  // Encode, then with add_special_tokens the prompt template around it, as
  // transformers' encode(text) does by default.
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view text, bool parse_special,
                                                    bool add_special_tokens) const;

  // The bytes of `ids` concatenated (not necessarily valid UTF-8 when the ids
  // split a character); for SentencePiece, less the one space its encoder
  // put in front of the text (see drops_leading_space). An id outside the
  // vocabulary is InvalidArgument naming it.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special = false) const;

  // Max id + 1 over every token.
  virtual int32_t vocab_size() const = 0;
  // The id of a token as the tokenizer file spells it; nullopt if none.
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  // Raw bytes a token decodes to; nullopt for an id with no token. Special
  // tokens decode to their text.
  virtual std::optional<std::string_view> TokenBytes(int32_t id) const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual const std::vector<int32_t>& special_ids() const = 0;
  // "byte-level BPE" or "SentencePiece", for messages and ModelInfo.
  virtual const char* kind() const = 0;
  // SentencePiece writes a space ("▁") in front of the text it encodes, and
  // its decoders drop one space at the start of the decoded text again.
  virtual bool drops_leading_space() const { return false; }
  // The BOS and EOS a SentencePiece model defines itself (nullopt for
  // byte-level BPE, whose tokenizer.json names none).
  virtual std::optional<int32_t> model_bos_id() const { return std::nullopt; }
  virtual std::optional<int32_t> model_eos_id() const { return std::nullopt; }

  const PromptTemplate& prompt_template() const { return prompt_template_; }
  void set_prompt_template(PromptTemplate t) { prompt_template_ = std::move(t); }

 private:
  PromptTemplate prompt_template_;
};

// The template a tokenizer.json's `post_processor` node gives (see below);
// ids are checked against `tokenizer`'s vocabulary, nesting is bounded.
absl::StatusOr<PromptTemplate> PostProcessorTemplate(const nlohmann::json& post_processor,
                                                     const Tokenizer& tokenizer);

// The tokenizer of a model directory, ready to serve:
// - tokenizer.json of the byte-level BPE kind loads as BpeTokenizer;
//   otherwise tokenizer.model loads through SentencePiece; a tokenizer.json
//   of the SentencePiece kind alone is refused, naming tokenizer.model.
// - The prompt template, as transformers builds it: tokenizer_config.json's
//   add_bos_token / add_eos_token, when either is given, put its bos_token /
//   eos_token around the text (the rule of transformers' Llama, Gemma and
//   SentencePiece tokenizers); otherwise tokenizer.json's post_processor
//   (TemplateProcessing's `single`, BertProcessing, RobertaProcessing,
//   possibly in a Sequence; ByteLevel adds nothing); otherwise, for
//   SentencePiece, its BOS piece (add_bos_token's default there); otherwise
//   nothing.
// - A tokenizer with more tokens than `embedding_rows` (config.json's
//   vocab_size) is refused: some ids would have no embedding.
// Every error names the file and the field.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::string& dir,
                                                              int64_t embedding_rows);

}  // namespace shift
