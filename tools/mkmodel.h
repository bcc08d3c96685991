// Writes random-weight Llama-family models in the Hugging Face layout
// (config.json, safetensors, tokenizer.json trained on a given text or a
// given SentencePiece tokenizer.model) for tests
// and benchmarks. Weights are a pure function of (seed, tensor name, element
// index), so output does not depend on sharding or threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/model_config.h"
#include "common/model_schema.h"

namespace shift {

struct MkModelOptions {
  ModelConfig config;
  // kBF16 or kF32 for every tensor; kF8E4M3 for FP8 projections (per-channel
  // scales, compressed-tensors layout, or block scales below) with
  // everything else in bf16.
  DType dtype = DType::kBF16;
  // With kF8E4M3: 128 writes 128 x 128 block scales (quant_method "fp8",
  // fp32 weight_scale_inv, the last blocks partial where a dimension is not
  // a multiple of 128); 0 per-channel scales.
  int64_t fp8_block = 0;
  uint64_t seed = 0;
  // Training text for the tokenizer; empty means the built-in corpus.
  std::string corpus;
  // Tokenizer size to aim for (capped by config.vocab_size).
  int32_t tokenizer_vocab = 2048;
  // The bytes of a SentencePiece model to ship as tokenizer.model instead of
  // training a byte-level BPE tokenizer.json (vocab_size grows to its size
  // when smaller; BOS/EOS are its own, and a text prompt gets BOS as in
  // Llama 2 and Mistral).
  std::string sentencepiece_model;
  // Write config.json and tokenizer files only (shapes too large to write).
  bool config_only = false;
  // Start a new shard (and write an index) past this many bytes; 0: one file.
  uint64_t max_shard_bytes = 0;
};

// The shapes of the presets: tiny (a few MB, for tests), tiny-qwen3 (tiny
// with Qwen 3's per-head q/k norms), tiny-mistral (tiny with a 16-token
// sliding window), llama3-8b and llama3-70b (Llama 3.1 shapes, llama3 RoPE
// scaling), qwen2-32b (Qwen2.5-32B shape, q/k/v biases), qwen3-32b
// (Qwen3-32B), mistral-7b (Mistral-7B-v0.1, a 4096-token window).
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);

// The training text compiled into the binary.
std::string_view BuiltinCorpus();

// Element `index` of tensor `spec` as fp32 (before rounding to the dtype).
float RandomWeight(uint64_t seed, const TensorSpec& spec, int64_t index);
// All of a tensor's bytes in `dtype`.
std::string RandomTensorBytes(uint64_t seed, const TensorSpec& spec, DType dtype);

// `rows` x `cols` fp32 values quantized to FP8 E4M3 with one scale per row
// (the row's largest magnitude over 448, rounded to bf16 as it is stored):
// the F8_E4M3 bytes and the scales.
struct Fp8Quantized {
  std::string bytes;
  std::vector<float> scales;
};
Fp8Quantized QuantizeFp8PerRow(const std::vector<float>& values, int64_t rows, int64_t cols);
// The same with one fp32 scale per block x block tile (its largest
// magnitude over 448), [ceil(rows / block)][ceil(cols / block)] row-major.
Fp8Quantized QuantizeFp8Blocks(const std::vector<float>& values, int64_t rows, int64_t cols,
                               int64_t block);

struct MkModelResult {
  ModelConfig config;  // as written (bos/eos set from the tokenizer)
  int32_t tokenizer_size = 0;
  int shards = 0;  // 0 with config_only
  uint64_t weight_bytes = 0;
};

// Writes the model into `dir` (created if missing).
absl::StatusOr<MkModelResult> WriteRandomModel(const std::string& dir,
                                               const MkModelOptions& options);

}  // namespace shift
