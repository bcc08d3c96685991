// Encoding throughput (MB/s of UTF-8 input) of each shared vocabulary on two
// ~1 MB texts: the reference test strings repeated (multilingual, emoji,
// whitespace runs) and generated English-like prose. Data comes from
// SHIFT_SHARED_DATA, else ../shared/data relative to the working directory.
#include <cstdio>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/tokenizer.h"
#include "tests/unit/tokenizer_test_data.h"

namespace shift {
namespace {

constexpr size_t kTextBytes = 1 << 20;

std::string RepeatedTestStrings(const std::vector<std::string>& strings) {
  std::string text;
  while (text.size() < kTextBytes) {
    for (const std::string& s : strings) text += s + "\n";
  }
  return text;
}

// Deterministic prose: common words, some capitalised, numbers, punctuation
// and paragraph breaks, so pieces repeat as in real text.
std::string EnglishLikeText() {
  static const char* kWords[] = {"the",
                                 "of",
                                 "and",
                                 "to",
                                 "in",
                                 "is",
                                 "that",
                                 "for",
                                 "it",
                                 "as",
                                 "was",
                                 "with",
                                 "be",
                                 "by",
                                 "on",
                                 "not",
                                 "he",
                                 "this",
                                 "are",
                                 "or",
                                 "his",
                                 "from",
                                 "at",
                                 "which",
                                 "but",
                                 "have",
                                 "an",
                                 "they",
                                 "you",
                                 "were",
                                 "their",
                                 "one",
                                 "all",
                                 "we",
                                 "can",
                                 "her",
                                 "has",
                                 "there",
                                 "been",
                                 "if",
                                 "more",
                                 "when",
                                 "will",
                                 "would",
                                 "who",
                                 "so",
                                 "no",
                                 "tokenizer",
                                 "inference",
                                 "parallelism",
                                 "scheduler",
                                 "throughput",
                                 "sequence",
                                 "generation",
                                 "approximately",
                                 "unbelievable",
                                 "characteristics",
                                 "don't",
                                 "it's",
                                 "we'll"};
  std::mt19937 rng(42);
  std::string text;
  bool capitalize = true;
  while (text.size() < kTextBytes) {
    std::string word = kWords[rng() % std::size(kWords)];
    if (capitalize) word[0] = static_cast<char>(std::toupper(word[0]));
    capitalize = false;
    text += word;
    const unsigned r = rng() % 100;
    if (r < 6) {
      text += ". ";
      capitalize = true;
    } else if (r < 9) {
      text += ", ";
    } else if (r < 10) {
      absl::StrAppend(&text, " ", rng() % 100000, " ");
    } else if (r < 11) {
      text += ".\n\n";
      capitalize = true;
    } else {
      text += " ";
    }
  }
  return text;
}

void BM_Encode(benchmark::State& state, const Tokenizer* tokenizer, const std::string* text) {
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tokenizer->Encode(*text);
    if (!ids.ok()) {
      state.SkipWithError(std::string(ids.status().message()).c_str());
      return;
    }
    tokens = ids->size();
    benchmark::DoNotOptimize(ids->data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text->size()));
  state.counters["tokens"] = static_cast<double>(tokens);
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  using namespace shift;
  benchmark::Initialize(&argc, argv);
  const auto strings = testdata::TestStrings();
  if (!strings) {
    std::printf("shared data not found at %s; nothing to benchmark\n",
                testdata::TokenizerDir().c_str());
    return 0;
  }
  static const std::string repeated = RepeatedTestStrings(*strings);
  static const std::string english = EnglishLikeText();
  for (const char* vocab : testdata::kVocabularies) {
    auto tokenizer = testdata::LoadTokenizer(vocab);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s: %s\n", vocab, std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    benchmark::RegisterBenchmark((std::string("Encode/") + vocab + "/test_strings").c_str(),
                                 BM_Encode, *tokenizer, &repeated)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("Encode/") + vocab + "/english").c_str(), BM_Encode,
                                 *tokenizer, &english)
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
