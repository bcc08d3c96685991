#include "common/bpe_tokenizer.h"

#include <algorithm>
#include <iterator>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"
#include "common/unicode.h"

namespace shift {
namespace {

// Pieces longer than this are not cached (they are rare and would evict
// many short ones); the cache is cleared when it reaches kCacheEntries.
constexpr size_t kMaxCachedPieceBytes = 256;
constexpr size_t kCacheEntries = 1 << 16;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// The absl in use has its own string_view type; heterogeneous lookups in
// absl containers need it.
absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// What single_word added tokens must not touch: a letter, number or '_'.
bool IsWordCodepoint(char32_t cp) {
  return cp == '_' || HasProperty(cp, UnicodeProperty::kLetter) ||
         HasProperty(cp, UnicodeProperty::kNumber);
}

// A token id as tokenizer.json spells it: an integer in 0 .. kMaxTokenId-1
// (a float or a huge number is an error, not a conversion).
absl::StatusOr<int32_t> TokenId(const nlohmann::json& value, std::string_view token) {
  const bool in_range = value.is_number_integer() &&
                        (value.is_number_unsigned()
                             ? value.get<uint64_t>() < static_cast<uint64_t>(kMaxTokenId)
                             : value.get<int64_t>() >= 0 && value.get<int64_t>() < kMaxTokenId);
  if (!in_range) {
    return absl::InvalidArgumentError(absl::StrCat("token ", View(token), " has id ", value.dump(),
                                                   ", outside 0..", kMaxTokenId - 1));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

// Whether a node names a SentencePiece-style step anywhere inside it (a
// Sequence's parts included): Metaspace, ByteFallback, a Replace or Prepend
// of the metaspace "▁".
bool HasSentencePieceStep(const nlohmann::json& node, int depth = 0) {
  if (depth > 32) return false;  // not real; the loaders refuse such nesting
  if (node.is_array()) {
    return std::any_of(node.begin(), node.end(), [depth](const nlohmann::json& n) {
      return HasSentencePieceStep(n, depth + 1);
    });
  }
  if (!node.is_object()) return false;
  const auto type = node.find("type");
  if (type != node.end() && type->is_string()) {
    const std::string& name = type->get_ref<const std::string&>();
    if (name == "Metaspace" || name == "ByteFallback") return true;
    if ((name == "Replace" || name == "Prepend") &&
        node.dump().find("\u2581") != std::string::npos) {
      return true;
    }
  }
  for (const char* list : {"pretokenizers", "normalizers", "decoders"}) {
    if (const auto it = node.find(list); it != node.end() && HasSentencePieceStep(*it, depth + 1)) {
      return true;
    }
  }
  return false;
}

bool IsSentencePieceKind(const nlohmann::json& root) {
  for (const char* step : {"normalizer", "pre_tokenizer", "decoder"}) {
    if (const auto it = root.find(step); it != root.end() && HasSentencePieceStep(*it)) return true;
  }
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object()) return false;
  return model->value("type", std::string()) == "Unigram" ||
         (model->contains("byte_fallback") && model->at("byte_fallback").is_boolean() &&
          model->at("byte_fallback").get<bool>());
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(std::string_view json_text) {
  std::unique_ptr<BpeTokenizer> tokenizer(new BpeTokenizer());
  try {
    SHIFT_RETURN_IF_ERROR(tokenizer->Load(json_text));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
  return tokenizer;
}

// May throw nlohmann::json::exception; FromJson converts it.
absl::Status BpeTokenizer::Load(std::string_view json_text) {
  const nlohmann::json root = nlohmann::json::parse(json_text);
  if (IsSentencePieceKind(root)) {
    return absl::UnimplementedError(
        "this tokenizer.json is of the SentencePiece kind (Metaspace, byte fallback or Unigram), "
        "which shift loads only from the model's SentencePiece tokenizer.model: provide that file "
        "beside it");
  }
  if (const auto it = root.find("normalizer"); it != root.end() && !it->is_null()) {
    return absl::UnimplementedError(
        absl::StrCat("normalizer type ", it->value("type", std::string("?")), " is not supported"));
  }
  if (const auto it = root.find("pre_tokenizer"); it != root.end()) {
    SHIFT_ASSIGN_OR_RETURN(pre_tokenizer_, PreTokenizer::FromJson(*it));
  }
  // A pattern that backtracks catastrophically fails the load, not a request
  // later: each probe is a long run of one kind of character ended by
  // another, the shape on which such patterns explode.
  for (const std::string unit : {"a", "A", " ", "1", "!", "\n", "\xC3\xA9", "\xE4\xB8\xAD"}) {
    for (const std::string end : {"!", "a", " "}) {
      std::string probe;
      for (int i = 0; i < 256; ++i) probe += unit;
      auto split = pre_tokenizer_.Split(probe + end);
      if (!split.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("pre_tokenizer: ", split.status().message()));
      }
    }
  }
  const auto decoder = root.find("decoder");
  const bool byte_level_decoder = decoder != root.end() && decoder->is_object() &&
                                  decoder->value("type", std::string()) == "ByteLevel";
  if (!pre_tokenizer_.has_byte_level() && !byte_level_decoder) {
    return absl::UnimplementedError(
        "only byte-level BPE is supported (no ByteLevel pre_tokenizer or decoder)");
  }
  SHIFT_RETURN_IF_ERROR(LoadModel(root.at("model")));
  if (const auto it = root.find("added_tokens"); it != root.end()) {
    SHIFT_RETURN_IF_ERROR(LoadAddedTokens(*it));
  }
  // Read in place: a node nested deep is never copied (copies recurse).
  if (const auto it = root.find("post_processor"); it != root.end()) {
    auto post = PostProcessorTemplate(*it, *this);
    if (!post.ok()) {
      return absl::Status(post.status().code(),
                          absl::StrCat("post_processor: ", post.status().message()));
    }
    post_template_ = *std::move(post);
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::LoadModel(const nlohmann::json& model) {
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("model type ", type, " is not supported"));
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto it = model.find(field); it != model.end() && !it->is_null()) {
      return absl::UnimplementedError(absl::StrCat("BPE ", field, " is not supported"));
    }
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError("BPE byte_fallback is not supported");
  }
  ignore_merges_ = model.value("ignore_merges", false);

  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (const auto& [key, value] : model.at("vocab").items()) {
    SHIFT_ASSIGN_OR_RETURN(const int32_t id, TokenId(value, key));
    if (id >= vocab_size()) {
      bytes_.resize(id + 1);
      kinds_.resize(id + 1, Kind::kNone);
    }
    kinds_[id] = Kind::kModel;
    std::optional<std::string> raw = ByteLevelDecode(key);
    bytes_[id] = raw ? *raw : key;
    if (!raw) continue;
    if (raw->size() == 1) byte_ids_[static_cast<unsigned char>((*raw)[0])] = id;
    model_ids_.emplace(std::move(*raw), id);
  }
  for (int b = 0; b < 256; ++b) {
    if (byte_ids_[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary has no token for byte ", b));
    }
  }

  const auto& merges = model.at("merges");
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge \"", text, "\" has no space"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else {
      left = merge.at(0).get<std::string>();
      right = merge.at(1).get<std::string>();
    }
    const auto left_bytes = ByteLevelDecode(left);
    const auto right_bytes = ByteLevelDecode(right);
    const auto left_id = left_bytes ? model_ids_.find(*left_bytes) : model_ids_.end();
    const auto right_id = right_bytes ? model_ids_.find(*right_bytes) : model_ids_.end();
    if (left_id == model_ids_.end() || right_id == model_ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge \"", left, " ", right, "\" uses a token not in the vocabulary"));
    }
    const auto merged = model_ids_.find(*left_bytes + *right_bytes);
    if (merged == model_ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge \"", left, " ", right, "\" makes a token not in the vocabulary"));
    }
    // Like HF, a repeated pair takes its last rank.
    merges_.insert_or_assign(PairKey(left_id->second, right_id->second),
                             Merge{rank++, merged->second});
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::LoadAddedTokens(const nlohmann::json& added) {
  trie_terminal_.assign(1, -1);
  for (const auto& token : added) {
    std::string content = token.at("content").get<std::string>();
    SHIFT_ASSIGN_OR_RETURN(const int32_t id, TokenId(token.at("id"), content));
    if (content.empty() || FindInvalidUtf8(content) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("invalid added token id ", id));
    }
    const bool special = token.value("special", false);
    if (id >= vocab_size()) {
      bytes_.resize(id + 1);
      kinds_.resize(id + 1, Kind::kNone);
    }
    bytes_[id] = content;
    kinds_[id] = special ? Kind::kSpecial : Kind::kAdded;
    if (special) special_ids_.push_back(id);
    added_ids_[content] = id;

    int32_t node = 0;
    for (const char c : content) {
      const uint64_t edge = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
      auto [it, inserted] = trie_edges_.try_emplace(edge, trie_terminal_.size());
      if (inserted) trie_terminal_.push_back(-1);
      node = it->second;
    }
    trie_terminal_[node] = static_cast<int32_t>(added_.size());
    added_first_byte_[static_cast<unsigned char>(content[0])] = true;
    added_.push_back({id, special, token.value("lstrip", false), token.value("rstrip", false),
                      token.value("single_word", false)});
  }
  return absl::OkStatus();
}

std::optional<int32_t> BpeTokenizer::TokenToId(std::string_view token) const {
  if (const auto it = added_ids_.find(View(token)); it != added_ids_.end()) return it->second;
  const auto raw = ByteLevelDecode(token);
  if (!raw) return std::nullopt;
  if (const auto it = model_ids_.find(*raw); it != model_ids_.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string_view> BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size() || kinds_[id] == Kind::kNone) return std::nullopt;
  return bytes_[id];
}

std::optional<std::pair<int, size_t>> BpeTokenizer::MatchAdded(std::string_view text, size_t pos,
                                                               bool parse_special) const {
  std::optional<std::pair<int, size_t>> best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto it =
        trie_edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == trie_edges_.end()) break;
    node = it->second;
    const int32_t index = trie_terminal_[node];
    if (index < 0 || (added_[index].special && !parse_special)) continue;
    if (added_[index].single_word) {
      // The codepoint before starts at the last non-continuation byte.
      size_t prev = pos;
      while (prev > 0 && (static_cast<unsigned char>(text[prev - 1]) & 0xC0) == 0x80) --prev;
      if (prev > 0 && IsWordCodepoint(DecodeUtf8(text.substr(prev - 1)).cp)) continue;
      if (i + 1 < text.size() && IsWordCodepoint(DecodeUtf8(text.substr(i + 1)).cp)) continue;
    }
    best = {index, i + 1 - pos};
  }
  return best;
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          bool parse_special) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("input is not valid UTF-8 at byte ", bad));
  }
  std::vector<int32_t> ids;
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t pos = 0; pos < text.size();) {
    const auto match = added_first_byte_[static_cast<unsigned char>(text[pos])]
                           ? MatchAdded(text, pos, parse_special)
                           : std::nullopt;
    if (!match) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_[match->first];
    size_t begin = pos, end = pos + match->second;
    if (token.lstrip) {
      while (begin > segment && IsAsciiSpace(text[begin - 1])) --begin;
    }
    if (token.rstrip) {
      while (end < text.size() && IsAsciiSpace(text[end])) ++end;
    }
    SHIFT_RETURN_IF_ERROR(EncodeText(text.substr(segment, begin - segment), &ids));
    ids.push_back(token.id);
    segment = pos = end;
  }
  SHIFT_RETURN_IF_ERROR(EncodeText(text.substr(segment), &ids));
  return ids;
}

absl::Status BpeTokenizer::EncodeText(std::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return absl::OkStatus();
  SHIFT_ASSIGN_OR_RETURN(std::vector<std::string> pieces, pre_tokenizer_.Split(text));
  for (const std::string& piece : pieces) EncodePiece(piece, ids);
  return absl::OkStatus();
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.size() == 1) {
    ids->push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  // Llama 3: a piece that is already a token is not split up by merges.
  if (ignore_merges_) {
    if (const auto it = model_ids_.find(View(piece)); it != model_ids_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (const auto it = cache_.find(View(piece)); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  Bpe(piece, ids);
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.try_emplace(std::string(piece), ids->begin() + first, ids->end());
  }
}

// Merges adjacent symbols lowest rank first (leftmost on ties), as HF does,
// over a linked list of symbols with a lazily invalidated priority queue:
// O(n log n) per piece.
void BpeTokenizer::Bpe(std::string_view piece, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int prev, next;  // -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int n = static_cast<int>(piece.size());
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) {
    symbols[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1,
                  true};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, symbols[left].id, symbols[right].id, it->second.id});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    // Stale entry: one side has merged since this candidate was pushed.
    if (!left.alive || left.id != top.left || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != top.right) continue;
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace shift
