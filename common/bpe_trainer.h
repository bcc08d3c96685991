// Trains a byte-level BPE tokenizer (GPT-2 style: GPT-2 pre-tokenizer regex,
// ByteLevel alphabet and decoder) on a text and writes it as a Hugging Face
// tokenizer.json, so generated models come with a real tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace shift {

struct BpeTrainerOptions {
  // Total tokens wanted, special tokens included. At least 256 + specials;
  // training stops earlier when no pair occurs `min_frequency` times.
  int32_t vocab_size = 2048;
  int32_t min_frequency = 2;
  // Added as special tokens after the trained vocabulary, in this order.
  std::vector<std::string> special_tokens = {"<|begin_of_text|>", "<|end_of_text|>"};
};

// tokenizer.json text. Deterministic: the most frequent pair wins, ties go
// to the pair of smaller token ids.
absl::StatusOr<std::string> TrainByteLevelBpe(std::string_view text,
                                              const BpeTrainerOptions& options);

}  // namespace shift
