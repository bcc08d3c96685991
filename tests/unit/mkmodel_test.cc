// The model generator: what it writes loads back through the worker's loader
// with every tensor's shape and bytes as generated, for single-file and
// sharded checkpoints, and its tokenizer round-trips text.
#include "tools/mkmodel.h"

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/file_util.h"
#include "common/model_schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "worker/model_files.h"

namespace shift {
namespace {

using ::testing::HasSubstr;

class MkModelTest : public ::testing::Test {
 protected:
  std::string Dir(const std::string& name) const { return tmp_.Sub(name); }

  static MkModelOptions Tiny(uint64_t seed) {
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    options.seed = seed;
    return options;
  }

  // Every tensor the schema names has the bytes the generator makes for it.
  static void ExpectGeneratedBytes(const ModelFiles& files, uint64_t seed, DType dtype) {
    for (const TensorSpec& spec : ModelTensorSpecs(files.config)) {
      const TensorView* view = files.checkpoint->Find(spec.name);
      ASSERT_NE(view, nullptr) << spec.name;
      EXPECT_EQ(view->shape, spec.shape) << spec.name;
      EXPECT_EQ(view->dtype, dtype) << spec.name;
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(view->data), view->nbytes),
                RandomTensorBytes(seed, spec, dtype))
          << spec.name;
    }
  }

  testing::TestTempDir tmp_;
};

TEST_F(MkModelTest, TinyModelLoadsBackWithEveryTensorChecked) {
  auto written = WriteRandomModel(Dir("tiny"), Tiny(7));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->shards, 1);
  auto files = OpenModelFiles(Dir("tiny"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->config.hidden_size, 64);
  EXPECT_EQ(files->config.num_key_value_heads, 2);
  EXPECT_EQ(files->checkpoint->Names().size(), ModelTensorSpecs(files->config).size());
  EXPECT_EQ(files->checkpoint->TotalBytes(), written->weight_bytes);
  ExpectGeneratedBytes(*files, 7, DType::kBF16);
  // The config's special ids are the tokenizer's.
  ASSERT_TRUE(files->config.bos_token_id.has_value());
  EXPECT_TRUE(files->tokenizer->IsSpecial(static_cast<int32_t>(*files->config.bos_token_id)));
  EXPECT_TRUE(files->tokenizer->IsSpecial(static_cast<int32_t>(files->config.eos_token_ids[0])));
  EXPECT_LE(files->tokenizer->vocab_size(), files->config.vocab_size);
}

// --dtype=fp8: projections in F8_E4M3 with bf16 per-channel scales, the
// rest in bf16; the loader dequantizes them to scale x code exactly, close
// to the unquantized weights.
TEST_F(MkModelTest, Fp8ProjectionsLoadDequantized) {
  MkModelOptions options = Tiny(5);
  options.dtype = DType::kF8E4M3;
  auto written = WriteRandomModel(Dir("fp8"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  auto files = OpenModelFiles(Dir("fp8"));
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_TRUE(files->config.quantization.has_value());
  for (const TensorSpec& spec : ModelTensorSpecs(files->config)) {
    const TensorView* view = files->checkpoint->Find(spec.name);
    ASSERT_NE(view, nullptr) << spec.name;
    const bool projection = spec.role == TensorRole::kProjection;
    EXPECT_EQ(view->dtype, projection ? DType::kF8E4M3 : DType::kBF16) << spec.name;
    if (!projection) continue;
    const int64_t rows = spec.shape[0], cols = spec.shape[1];
    const TensorView* scale = files->checkpoint->Find(WeightScaleName(files->config, spec.name));
    ASSERT_NE(scale, nullptr) << spec.name;
    EXPECT_EQ(scale->shape, (std::vector<int64_t>{rows, 1}));
    std::vector<float> got(rows * cols), scales(rows);
    ASSERT_TRUE(
        ReadWeightAsF32(*files->checkpoint, files->config, spec.name, rows, cols, got.data()).ok());
    ASSERT_TRUE(files->checkpoint->ReadAsF32(scale->name, {rows, 1}, scales.data()).ok());
    double err = 0, ref = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        ASSERT_EQ(got[i], F8E4M3ToF32(view->data[i]) * scales[r]) << spec.name << " " << i;
        const double want = RandomWeight(5, spec, i);
        err += (got[i] - want) * (got[i] - want);
        ref += want * want;
      }
    }
    // E4M3 keeps 3 mantissa bits: a relative error of at most 1/16.
    EXPECT_LT(err / ref, 1.0 / 256) << spec.name;
  }
  // Without quantization_config an F8_E4M3 weight is refused.
  ModelConfig plain = files->config;
  plain.quantization.reset();
  std::vector<float> out(64 * 64);
  const absl::Status refused = ReadWeightAsF32(
      *files->checkpoint, plain, "model.layers.0.self_attn.q_proj.weight", 64, 64, out.data());
  EXPECT_THAT(refused.message(), HasSubstr("no quantization_config"));
}

TEST_F(MkModelTest, WeightsLookInitialised) {
  const TensorSpec proj{"w", {64, 64}, TensorRole::kProjection};
  const TensorSpec norm{"n", {64}, TensorRole::kNorm};
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < proj.NumElements(); ++i) {
    const double v = RandomWeight(3, proj, i);
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(proj.NumElements());
  EXPECT_NEAR(sum / n, 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(sum_sq / n), 0.02, 0.002);
  for (int64_t i = 0; i < norm.NumElements(); ++i) {
    EXPECT_NEAR(RandomWeight(3, norm, i), 1.0f, 0.1f + 1e-6f);
  }
}

TEST_F(MkModelTest, ShardedOutputHoldsTheSameTensors) {
  MkModelOptions options = Tiny(7);
  options.max_shard_bytes = 64 * 1024;
  auto written = WriteRandomModel(Dir("sharded"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_GT(written->shards, 2);
  EXPECT_TRUE(std::filesystem::exists(Dir("sharded") + "/model.safetensors.index.json"));
  auto files = OpenModelFiles(Dir("sharded"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->checkpoint->files().size(), static_cast<size_t>(written->shards));
  ExpectGeneratedBytes(*files, 7, DType::kBF16);

  // Writing a single-file model over it removes the old shards and index.
  ASSERT_TRUE(WriteRandomModel(Dir("sharded"), Tiny(7)).ok());
  EXPECT_FALSE(std::filesystem::exists(Dir("sharded") + "/model.safetensors.index.json"));
  auto single = OpenModelFiles(Dir("sharded"));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->checkpoint->files().size(), 1u);
}

TEST_F(MkModelTest, SeedDecidesTheBytes) {
  const TensorSpec spec{"model.layers.0.mlp.up_proj.weight", {192, 64}, TensorRole::kProjection};
  EXPECT_EQ(RandomTensorBytes(1, spec, DType::kBF16), RandomTensorBytes(1, spec, DType::kBF16));
  EXPECT_NE(RandomTensorBytes(1, spec, DType::kBF16), RandomTensorBytes(2, spec, DType::kBF16));
  TensorSpec other = spec;
  other.name = "model.layers.1.mlp.up_proj.weight";
  EXPECT_NE(RandomTensorBytes(1, spec, DType::kBF16), RandomTensorBytes(1, other, DType::kBF16));
}

TEST_F(MkModelTest, Fp32Qwen2WithBiasesAndTiedEmbeddings) {
  MkModelOptions options = Tiny(11);
  options.dtype = DType::kF32;
  options.config.architecture = "Qwen2ForCausalLM";
  options.config.model_type = "qwen2";
  options.config.attention_bias = true;
  options.config.tie_word_embeddings = true;
  ASSERT_TRUE(WriteRandomModel(Dir("qwen"), options).ok());
  auto files = OpenModelFiles(Dir("qwen"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(files->config.attention_bias);
  EXPECT_TRUE(files->config.tie_word_embeddings);
  EXPECT_NE(files->checkpoint->Find("model.layers.1.self_attn.k_proj.bias"), nullptr);
  EXPECT_EQ(files->checkpoint->Find("lm_head.weight"), nullptr);
  ExpectGeneratedBytes(*files, 11, DType::kF32);
}

TEST_F(MkModelTest, TokenizerRoundTripsText) {
  ASSERT_TRUE(WriteRandomModel(Dir("tok"), Tiny(1)).ok());
  auto files = OpenModelFiles(Dir("tok"));
  ASSERT_TRUE(files.ok()) << files.status();
  const Tokenizer& tok = *files->tokenizer;
  for (const char* text : {"The lighthouse keeper counted ships.", "  two  spaces\tand a tab\n",
                           "Größe, señor, 日本語, 🚀👩‍💻",
                           "int32_t Argmax(const std::vector<float>& logits);"}) {
    auto ids = tok.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tok.Decode(*ids), text);
  }
  // Trained merges make common words single tokens.
  auto the = tok.Encode(" the");
  ASSERT_TRUE(the.ok());
  EXPECT_EQ(the->size(), 1u);
}

TEST_F(MkModelTest, ShipsAGivenSentencePieceModel) {
  const char* data = std::getenv("SHIFT_SHARED_DATA");
  const std::string path = std::string(data != nullptr ? data : "../shared/data") +
                           "/tokenizers/mistral-v1.tokenizer.model";
  auto model = ReadFileToString(path);
  if (!model.ok()) GTEST_SKIP() << "shared data not found: " << path;
  MkModelOptions options = Tiny(1);
  options.sentencepiece_model = *model;
  // A BPE tokenizer.json left by an earlier run would win: it is removed.
  ASSERT_TRUE(WriteRandomModel(Dir("sp"), Tiny(1)).ok());
  auto written = WriteRandomModel(Dir("sp"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_FALSE(std::filesystem::exists(Dir("sp") + "/tokenizer.json"));
  EXPECT_EQ(written->tokenizer_size, 32000);
  EXPECT_EQ(written->config.vocab_size, 32000);  // grown from the preset's
  EXPECT_EQ(written->config.bos_token_id, 1);
  EXPECT_EQ(written->config.eos_token_ids, std::vector<int64_t>{2});
  auto files = OpenModelFiles(Dir("sp"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_STREQ(files->tokenizer->kind(), "SentencePiece");
  auto ids = files->tokenizer->EncodePrompt("Hello", false, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 22557}));
  options.sentencepiece_model = "not a model";
  EXPECT_FALSE(WriteRandomModel(Dir("bad_sp"), options).ok());
}

TEST_F(MkModelTest, ConfigOnlyWritesNoWeights) {
  MkModelOptions options;
  options.config = *PresetConfig("llama3-70b");
  options.config_only = true;
  auto written = WriteRandomModel(Dir("big"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->shards, 0);
  EXPECT_TRUE(std::filesystem::exists(Dir("big") + "/config.json"));
  EXPECT_TRUE(std::filesystem::exists(Dir("big") + "/tokenizer.json"));
  EXPECT_FALSE(std::filesystem::exists(Dir("big") + "/model.safetensors"));
  auto config = LoadModelConfig(Dir("big"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_hidden_layers, 80);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_NEAR(static_cast<double>(config->NumParameters()), 70.55e9, 0.01e9);
}

TEST_F(MkModelTest, PresetsMatchPublishedSizes) {
  EXPECT_EQ(PresetConfig("llama3-8b")->NumParameters(), 8030261248);
  EXPECT_NEAR(static_cast<double>(PresetConfig("qwen2-32b")->NumParameters()), 32.76e9, 0.01e9);
  // Qwen3-32B (32.8B) and Mistral-7B-v0.1 (7.24B, a 4096-token window).
  EXPECT_EQ(PresetConfig("qwen3-32b")->NumParameters(), 32762123264);
  EXPECT_TRUE(PresetConfig("qwen3-32b")->qk_norm);
  EXPECT_EQ(PresetConfig("mistral-7b")->NumParameters(), 7241732096);
  EXPECT_EQ(PresetConfig("mistral-7b")->AttentionWindow(31), 4096);
  EXPECT_EQ(PresetConfig("tiny-mistral")->AttentionWindow(0), 16);
  auto unknown = PresetConfig("gpt-5");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown preset"));
}

// --dtype=fp8 --fp8_block=128: projections in F8_E4M3 with one fp32
// weight_scale_inv per 128 x 128 block (the tiny shapes make every block
// partial; a 320-wide MLP has whole ones too), which the loader multiplies
// in: code x its block's scale, exactly, close to the unquantized weights.
TEST_F(MkModelTest, Fp8BlockScalesLoadDequantized) {
  MkModelOptions options = Tiny(6);
  options.config.intermediate_size = 320;
  options.dtype = DType::kF8E4M3;
  options.fp8_block = 128;
  auto written = WriteRandomModel(Dir("fp8-block"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  auto files = OpenModelFiles(Dir("fp8-block"));
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_TRUE(files->config.quantization.has_value());
  EXPECT_EQ(files->config.quantization->block, 128);
  for (const TensorSpec& spec : ModelTensorSpecs(files->config)) {
    if (spec.role != TensorRole::kProjection) continue;
    const int64_t rows = spec.shape[0], cols = spec.shape[1];
    const TensorView* view = files->checkpoint->Find(spec.name);
    const std::string scale_name = WeightScaleName(files->config, spec.name);
    EXPECT_EQ(scale_name, spec.name + "_scale_inv");
    const TensorView* scale = files->checkpoint->Find(scale_name);
    ASSERT_NE(scale, nullptr) << scale_name;
    const std::vector<int64_t> grid = {(rows + 127) / 128, (cols + 127) / 128};
    EXPECT_EQ(scale->shape, grid) << scale_name;
    EXPECT_EQ(scale->dtype, DType::kF32);
    std::vector<float> got(rows * cols), scales(grid[0] * grid[1]);
    ASSERT_TRUE(
        ReadWeightAsF32(*files->checkpoint, files->config, spec.name, rows, cols, got.data()).ok());
    ASSERT_TRUE(files->checkpoint->ReadAsF32(scale_name, grid, scales.data()).ok());
    double err = 0, ref = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        ASSERT_EQ(got[i], F8E4M3ToF32(view->data[i]) * scales[r / 128 * grid[1] + c / 128])
            << spec.name << " " << i;
        const double want = RandomWeight(6, spec, i);
        err += (got[i] - want) * (got[i] - want);
        ref += want * want;
      }
    }
    EXPECT_LT(err / ref, 1.0 / 256) << spec.name;
  }
  // The writer makes 128 x 128 blocks only, and of FP8 weights only.
  options.fp8_block = 64;
  EXPECT_THAT(WriteRandomModel(Dir("fp8-64"), options).status().message(), HasSubstr("128 x 128"));
  options.fp8_block = 128;
  options.dtype = DType::kBF16;
  EXPECT_THAT(WriteRandomModel(Dir("bf16-block"), options).status().message(),
              HasSubstr("--dtype=fp8"));
}

TEST_F(MkModelTest, BadShapesAreRefused) {
  MkModelOptions options = Tiny(1);
  options.config.num_key_value_heads = 3;
  auto written = WriteRandomModel(Dir("bad"), options);
  ASSERT_FALSE(written.ok());
  EXPECT_THAT(written.status().message(), HasSubstr("num_key_value_heads"));
}

TEST_F(MkModelTest, TokenizerLargerThanEmbeddingIsRefusedAtLoad) {
  ASSERT_TRUE(WriteRandomModel(Dir("tok"), Tiny(1)).ok());
  MkModelOptions small = Tiny(1);
  small.config.vocab_size = 300;  // the generator trains to fit...
  ASSERT_TRUE(WriteRandomModel(Dir("small"), small).ok());
  auto fits = OpenModelFiles(Dir("small"));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_LE(fits->tokenizer->vocab_size(), 300);
  // ...but a larger tokenizer copied next to a smaller embedding is refused.
  std::filesystem::copy_file(Dir("tok") + "/tokenizer.json", Dir("small") + "/tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto refused = OpenModelFiles(Dir("small"));
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("some token ids would have no embedding"));
}

}  // namespace
}  // namespace shift
