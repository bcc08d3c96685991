#include "common/tokenizer.h"

#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/bpe_tokenizer.h"
#include "common/file_util.h"
#include "common/sentencepiece_tokenizer.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using nlohmann::json;

constexpr size_t kMaxTokenizerBytes = size_t{256} << 20;
constexpr size_t kMaxConfigBytes = size_t{64} << 20;
// Sequences of post-processors nest one deep in real files.
constexpr int kMaxNesting = 32;

absl::Status Prefixed(const absl::Status& status, const std::string& prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

absl::StatusOr<int32_t> CheckedId(const json& value, const Tokenizer& tokenizer,
                                  const std::string& field) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() >= tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has id ", value.dump(),
                                                   ", not a token of the vocabulary (0..",
                                                   tokenizer.vocab_size() - 1, ")"));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

// BertProcessing / RobertaProcessing's ["[CLS]", 101] pairs.
absl::StatusOr<int32_t> PairId(const json& node, const char* field, const Tokenizer& tokenizer) {
  const auto it = node.find(field);
  if (it == node.end() || !it->is_array() || it->size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be a [token, id] pair"));
  }
  return CheckedId((*it)[1], tokenizer, field);
}

// Wraps `inner` in the template of one post_processor node.
absl::Status ApplyPostProcessor(const json& node, const Tokenizer& tokenizer, PromptTemplate* inner,
                                int depth = 0) {
  if (node.is_null()) return absl::OkStatus();
  if (depth > kMaxNesting) {
    return absl::InvalidArgumentError(absl::StrCat("nested deeper than ", kMaxNesting));
  }
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError("must be an object with a type");
  }
  const std::string type = node["type"].get<std::string>();
  PromptTemplate outer;
  if (type == "ByteLevel") {
    return absl::OkStatus();  // offsets only
  } else if (type == "Sequence") {
    const auto processors = node.find("processors");
    if (processors == node.end() || !processors->is_array()) {
      return absl::InvalidArgumentError("Sequence needs a processors list");
    }
    for (const json& processor : *processors) {
      SHIFT_RETURN_IF_ERROR(ApplyPostProcessor(processor, tokenizer, inner, depth + 1));
    }
    return absl::OkStatus();
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    SHIFT_ASSIGN_OR_RETURN(const int32_t cls, PairId(node, "cls", tokenizer));
    SHIFT_ASSIGN_OR_RETURN(const int32_t sep, PairId(node, "sep", tokenizer));
    outer.prefix = {cls};
    outer.suffix = {sep};
  } else if (type == "TemplateProcessing") {
    const auto single = node.find("single");
    const auto specials = node.find("special_tokens");
    if (single == node.end() || !single->is_array()) {
      return absl::InvalidArgumentError("TemplateProcessing needs a `single` list");
    }
    bool seen_text = false;
    for (const json& item : *single) {
      if (item.is_object() && item.contains("Sequence")) {
        if (item["Sequence"].value("id", std::string()) != "A" || seen_text) {
          return absl::InvalidArgumentError(
              "TemplateProcessing's `single` must hold sequence A once");
        }
        seen_text = true;
        continue;
      }
      const auto special = item.is_object() ? item.find("SpecialToken") : item.end();
      if (special == item.end() || !special->is_object() || !special->contains("id") ||
          !(*special)["id"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("TemplateProcessing's `single` has ",
                                                       item.dump(),
                                                       ", neither Sequence nor SpecialToken"));
      }
      const std::string name = (*special)["id"].get<std::string>();
      if (specials == node.end() || !specials->is_object() || !specials->contains(name) ||
          !(*specials)[name].contains("ids") || !(*specials)[name]["ids"].is_array()) {
        return absl::InvalidArgumentError(
            absl::StrCat("TemplateProcessing's special_tokens has no ids for ", name));
      }
      for (const json& id : (*specials)[name]["ids"]) {
        SHIFT_ASSIGN_OR_RETURN(const int32_t checked,
                               CheckedId(id, tokenizer, absl::StrCat("special token ", name)));
        (seen_text ? outer.suffix : outer.prefix).push_back(checked);
      }
    }
    if (!seen_text) {
      return absl::InvalidArgumentError("TemplateProcessing's `single` has no sequence A");
    }
  } else {
    return absl::UnimplementedError(absl::StrCat("type ", type, " is not supported"));
  }
  outer.prefix.insert(outer.prefix.end(), inner->prefix.begin(), inner->prefix.end());
  outer.suffix.insert(outer.suffix.begin(), inner->suffix.begin(), inner->suffix.end());
  *inner = std::move(outer);
  return absl::OkStatus();
}

// A token named in tokenizer_config.json: a string, or an object whose
// "content" is one (transformers' AddedToken); nullopt when absent or null.
absl::StatusOr<std::optional<int32_t>> NamedToken(const json& config, const char* field,
                                                  const Tokenizer& tokenizer) {
  const auto it = config.find(field);
  if (it == config.end() || it->is_null()) return std::nullopt;
  const json* content = &*it;
  if (it->is_object()) {
    const auto c = it->find("content");
    if (c == it->end()) return absl::InvalidArgumentError(absl::StrCat(field, " has no content"));
    content = &*c;
  }
  if (!content->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be a string"));
  }
  const std::string name = content->get<std::string>();
  const std::optional<int32_t> id = tokenizer.TokenToId(name);
  if (!id) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", name, "\" is not a token of the vocabulary"));
  }
  return id;
}

absl::StatusOr<std::optional<bool>> OptionalBool(const json& config, const char* field) {
  const auto it = config.find(field);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be true or false"));
  }
  return it->get<bool>();
}

// tokenizer_config.json's flags over `base` (see LoadModelTokenizer).
absl::StatusOr<PromptTemplate> ApplyTokenizerConfig(const json& config, const Tokenizer& tokenizer,
                                                    PromptTemplate base) {
  if (!config.is_object()) return absl::InvalidArgumentError("must be a JSON object");
  if (const auto it = config.find("model_max_length");
      it != config.end() && !it->is_null() && (!it->is_number() || it->get<double>() < 1)) {
    return absl::InvalidArgumentError("model_max_length must be a positive number");
  }
  SHIFT_ASSIGN_OR_RETURN(std::optional<int32_t> bos, NamedToken(config, "bos_token", tokenizer));
  SHIFT_ASSIGN_OR_RETURN(std::optional<int32_t> eos, NamedToken(config, "eos_token", tokenizer));
  SHIFT_ASSIGN_OR_RETURN(const std::optional<bool> add_bos, OptionalBool(config, "add_bos_token"));
  SHIFT_ASSIGN_OR_RETURN(const std::optional<bool> add_eos, OptionalBool(config, "add_eos_token"));
  // Unnamed: a SentencePiece model's own (transformers' defaults, <s> and
  // </s>, are those pieces).
  if (!bos) bos = tokenizer.model_bos_id();
  if (!eos) eos = tokenizer.model_eos_id();
  if (add_bos) {
    if (*add_bos && !bos) {
      return absl::InvalidArgumentError("add_bos_token is true but there is no bos_token");
    }
    base.prefix.clear();
    if (*add_bos) base.prefix.push_back(*bos);
  }
  if (add_eos) {
    if (*add_eos && !eos) {
      return absl::InvalidArgumentError("add_eos_token is true but there is no eos_token");
    }
    base.suffix.clear();
    if (*add_eos) base.suffix.push_back(*eos);
  }
  return base;
}

}  // namespace

absl::StatusOr<PromptTemplate> PostProcessorTemplate(const nlohmann::json& post_processor,
                                                     const Tokenizer& tokenizer) {
  PromptTemplate t;
  SHIFT_RETURN_IF_ERROR(ApplyPostProcessor(post_processor, tokenizer, &t));
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text) {
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tokenizer,
                         BpeTokenizer::FromJson(json_text));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, kMaxTokenizerBytes));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer;
  if (path.ends_with(".json")) {
    tokenizer = FromJson(text);
  } else {
    auto sp = SentencePieceTokenizer::FromModel(text);
    if (sp.ok()) {
      tokenizer = std::unique_ptr<Tokenizer>(*std::move(sp));
    } else {
      tokenizer = sp.status();
    }
  }
  if (!tokenizer.ok()) return Prefixed(tokenizer.status(), path);
  return tokenizer;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodePrompt(std::string_view text,
                                                             bool parse_special,
                                                             bool add_special_tokens) const {
  SHIFT_ASSIGN_OR_RETURN(std::vector<int32_t> ids, Encode(text, parse_special));
  if (add_special_tokens) {
    ids.insert(ids.begin(), prompt_template_.prefix.begin(), prompt_template_.prefix.end());
    ids.insert(ids.end(), prompt_template_.suffix.begin(), prompt_template_.suffix.end());
  }
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special) const {
  std::string out;
  for (const int32_t id : ids) {
    const auto bytes = TokenBytes(id);
    if (!bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
    }
    if (skip_special && IsSpecial(id)) continue;
    out.append(*bytes);
  }
  if (drops_leading_space() && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::string& dir,
                                                              int64_t embedding_rows) {
  const std::string json_path = dir + "/tokenizer.json";
  const std::string model_path = dir + "/tokenizer.model";
  std::error_code ec;
  const bool has_json = std::filesystem::exists(json_path, ec);
  const bool has_model = std::filesystem::exists(model_path, ec);
  std::unique_ptr<Tokenizer> tokenizer;
  PromptTemplate base;
  if (has_json) {
    SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(json_path, kMaxTokenizerBytes));
    auto bpe = BpeTokenizer::FromJson(text);
    // A kind the BPE loader does not take (Unimplemented) falls to
    // tokenizer.model when there is one; a broken file is an error.
    if (!bpe.ok() && !(has_model && absl::IsUnimplemented(bpe.status()))) {
      return Prefixed(bpe.status(), json_path);
    }
    if (bpe.ok()) {
      base = (*bpe)->post_processor_template();
      tokenizer = *std::move(bpe);
    }
  }
  if (tokenizer == nullptr) {
    if (!has_model) {
      return absl::NotFoundError(absl::StrCat(dir, " has no tokenizer: shift loads a byte-level ",
                                              "BPE tokenizer.json or a SentencePiece ",
                                              "tokenizer.model"));
    }
    SHIFT_ASSIGN_OR_RETURN(tokenizer, Tokenizer::FromFile(model_path));
    if (const auto bos = tokenizer->model_bos_id()) base.prefix = {*bos};
  }
  const std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path, ec)) {
    SHIFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path, kMaxConfigBytes));
    const json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": not valid JSON"));
    }
    auto applied = ApplyTokenizerConfig(config, *tokenizer, std::move(base));
    if (!applied.ok()) return Prefixed(applied.status(), config_path);
    base = *std::move(applied);
  }
  if (tokenizer->vocab_size() > embedding_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "'s ", tokenizer->kind(), " tokenizer has ", tokenizer->vocab_size(),
                     " tokens but config.json's vocab_size is ", embedding_rows,
                     ": some token ids would have no embedding"));
  }
  tokenizer->set_prompt_template(std::move(base));
  return tokenizer;
}

}  // namespace shift
