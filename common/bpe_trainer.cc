#include "common/bpe_trainer.h"

#include <queue>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/pretokenizer.h"
#include "common/status.h"
#include "common/unicode.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using nlohmann::json;

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

json PreTokenizerJson() {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", kGpt2Pattern}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"},
             {"add_prefix_space", false},
             {"trim_offsets", true},
             {"use_regex", false}}}}};
}

using Pair = std::pair<int32_t, int32_t>;

uint64_t Key(Pair p) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(p.first)) << 32) |
         static_cast<uint32_t>(p.second);
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

// Pair counts with a lazy max-heap: stale heap entries are skipped on pop.
class PairCounts {
 public:
  void Add(Pair p, int64_t delta, size_t word) {
    int64_t& c = counts_[Key(p)];
    c += delta;
    if (delta > 0) where_[Key(p)].insert(word);
    if (c > 0) heap_.push({c, -p.first, -p.second});
  }
  // Most frequent pair with count >= min, or nullopt.
  std::optional<std::pair<Pair, int64_t>> PopBest(int64_t min) {
    while (!heap_.empty()) {
      auto [count, neg_left, neg_right] = heap_.top();
      heap_.pop();
      Pair p{-neg_left, -neg_right};
      auto it = counts_.find(Key(p));
      if (it == counts_.end() || it->second != count) continue;  // stale
      if (count < min) return std::nullopt;
      return std::make_pair(p, count);
    }
    return std::nullopt;
  }
  std::vector<size_t> Words(Pair p) {
    auto it = where_.find(Key(p));
    if (it == where_.end()) return {};
    std::vector<size_t> out(it->second.begin(), it->second.end());
    std::sort(out.begin(), out.end());
    where_.erase(it);
    return out;
  }

 private:
  absl::flat_hash_map<uint64_t, int64_t> counts_;
  absl::flat_hash_map<uint64_t, absl::flat_hash_set<size_t>> where_;
  std::priority_queue<std::tuple<int64_t, int32_t, int32_t>> heap_;
};

}  // namespace

absl::StatusOr<std::string> TrainByteLevelBpe(std::string_view text,
                                              const BpeTrainerOptions& options) {
  const int32_t specials = static_cast<int32_t>(options.special_tokens.size());
  if (options.vocab_size < 256 + specials) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a byte-level BPE vocabulary needs at least ", 256 + specials, " tokens (256 bytes and ",
        specials, " special tokens), asked for ", options.vocab_size));
  }
  const json pre_tokenizer_json = PreTokenizerJson();
  SHIFT_ASSIGN_OR_RETURN(PreTokenizer pre_tokenizer, PreTokenizer::FromJson(pre_tokenizer_json));

  // Token strings (raw bytes) by id; ids 0..255 are the bytes.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));

  absl::flat_hash_map<std::string, int64_t> piece_counts;
  SHIFT_ASSIGN_OR_RETURN(std::vector<std::string> pieces, pre_tokenizer.Split(text));
  for (std::string& piece : pieces) ++piece_counts[piece];
  std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  std::sort(sorted.begin(), sorted.end());  // determinism: hash order never leaks
  std::vector<Word> words;
  for (const auto& [piece, count] : sorted) {
    Word w{{}, count};
    for (unsigned char c : piece) w.symbols.push_back(c);
    words.push_back(std::move(w));
  }

  PairCounts pairs;
  for (size_t i = 0; i < words.size(); ++i) {
    const auto& s = words[i].symbols;
    for (size_t j = 0; j + 1 < s.size(); ++j) pairs.Add({s[j], s[j + 1]}, words[i].count, i);
  }

  std::vector<Pair> merges;
  const int32_t target = options.vocab_size - specials;
  while (static_cast<int32_t>(tokens.size()) < target) {
    auto best = pairs.PopBest(options.min_frequency);
    if (!best) break;
    const Pair p = best->first;
    const int32_t merged = static_cast<int32_t>(tokens.size());
    tokens.push_back(tokens[p.first] + tokens[p.second]);
    merges.push_back(p);
    for (size_t wi : pairs.Words(p)) {
      Word& w = words[wi];
      std::vector<int32_t>& s = w.symbols;
      std::vector<int32_t> out;
      out.reserve(s.size());
      // Remove the word's old pairs, rewrite it, add its new pairs.
      for (size_t j = 0; j + 1 < s.size(); ++j) pairs.Add({s[j], s[j + 1]}, -w.count, wi);
      for (size_t j = 0; j < s.size();) {
        if (j + 1 < s.size() && s[j] == p.first && s[j + 1] == p.second) {
          out.push_back(merged);
          j += 2;
        } else {
          out.push_back(s[j++]);
        }
      }
      s = std::move(out);
      for (size_t j = 0; j + 1 < s.size(); ++j) pairs.Add({s[j], s[j + 1]}, w.count, wi);
    }
  }

  json vocab = json::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[ByteLevelEncode(tokens[id])] = id;
  json merge_list = json::array();
  for (const Pair& m : merges) {
    merge_list.push_back(
        absl::StrCat(ByteLevelEncode(tokens[m.first]), " ", ByteLevelEncode(tokens[m.second])));
  }
  json added = json::array();
  for (int32_t i = 0; i < specials; ++i) {
    added.push_back({{"id", static_cast<int32_t>(tokens.size()) + i},
                     {"content", options.special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json tokenizer = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", added},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", pre_tokenizer_json},
                    {"post_processor",
                     {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", false},
                      {"use_regex", true}}},
                    {"decoder",
                     {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", true},
                      {"use_regex", true}}},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"ignore_merges", false},
                      {"vocab", vocab},
                      {"merges", merge_list}}}};
  return tokenizer.dump(2) + "\n";
}

}  // namespace shift
