// config.json parsing: real Llama 3, Qwen 2, Qwen 3 (bf16 and block FP8)
// and Mistral configs, defaults, sliding windows as transformers reads them,
// a round trip through ModelConfigToJson, and a clear error for each bad
// field.
#include "common/model_config.h"

#include <string>

#include "common/model_schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shift {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Meta-Llama-3.1-8B's config.json.
constexpr char kLlama31_8B[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

// Qwen2-0.5B's config.json: biases on q/k/v implied, tied embeddings.
constexpr char kQwen2[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
  "intermediate_size": 4864, "max_position_embeddings": 131072, "max_window_layers": 24,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 131072, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "use_sliding_window": false, "vocab_size": 151936})";

TEST(ModelConfigTest, ParsesLlama3WithGqaAndRopeScaling) {
  auto config = ParseModelConfig(kLlama31_8B, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->hidden_size, 4096);
  EXPECT_EQ(config->num_attention_heads, 32);
  EXPECT_EQ(config->num_key_value_heads, 8);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_DOUBLE_EQ(config->rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(config->rope_scaling->factor, 8.0);
  EXPECT_EQ(config->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_bias);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(config->bos_token_id, 128000);
  // 8.03B parameters, as published.
  EXPECT_EQ(config->NumParameters(), 8030261248);
}

TEST(ModelConfigTest, ParsesQwen2WithImpliedBiasesAndTiedEmbeddings) {
  auto config = ParseModelConfig(kQwen2, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->attention_bias);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_FALSE(config->rope_scaling.has_value());
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{151643}));
  // Qwen2-0.5B has 494M parameters.
  EXPECT_EQ(config->NumParameters(), 494032768);
  auto specs = ModelTensorSpecs(*config);
  EXPECT_EQ(specs.size(), 1u + 24u * 12u + 1u);  // no lm_head when tied
  EXPECT_EQ(specs[5].name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(specs[5].shape, (std::vector<int64_t>{896}));
}

// Qwen3-32B's config.json, and the quantization_config of Qwen3-32B-FP8.
#define QWEN3_32B \
  R"("architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02, "intermediate_size": 25600, "max_position_embeddings": 40960, "max_window_layers": 64, "model_type": "qwen3", "num_attention_heads": 64, "num_hidden_layers": 64, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936)"
#define QWEN3_FP8 \
  R"("quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]})"

TEST(ModelConfigTest, ParsesQwen3WithPerHeadNormsAndNoBiases) {
  auto config = ParseModelConfig("{" QWEN3_32B "}", "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qk_norm);
  EXPECT_FALSE(config->attention_bias);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->sliding_window, 0);
  for (int64_t layer : {0, 63}) EXPECT_EQ(config->AttentionWindow(layer), 0);
  // 32.8B parameters, 31.2B of them outside the embeddings, as published.
  EXPECT_EQ(config->NumParameters(), 32762123264);
  auto specs = ModelTensorSpecs(*config);
  EXPECT_EQ(specs.size(), 1u + 64u * 11u + 2u);
  EXPECT_EQ(specs[6].name, "model.layers.0.self_attn.q_norm.weight");
  EXPECT_EQ(specs[6].shape, (std::vector<int64_t>{128}));
  EXPECT_EQ(specs[7].name, "model.layers.0.self_attn.k_norm.weight");
  auto again = ParseModelConfig(ModelConfigToJson(*config), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ModelConfigToJson(*again), ModelConfigToJson(*config));
}

TEST(ModelConfigTest, ParsesTransformersFp8WithBlockScales) {
  auto config = ParseModelConfig("{" QWEN3_32B ", " QWEN3_FP8 "}", "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->quantization.has_value());
  EXPECT_EQ(config->quantization->block, 128);
  EXPECT_FALSE(config->quantization->per_channel);
  // Despite its name, weight_scale_inv multiplies (w = code · scale).
  EXPECT_EQ(WeightScaleName(*config, "model.layers.0.mlp.up_proj.weight"),
            "model.layers.0.mlp.up_proj.weight_scale_inv");
  auto again = ParseModelConfig(ModelConfigToJson(*config), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ModelConfigToJson(*again), ModelConfigToJson(*config));
  EXPECT_EQ(again->quantization->block, 128);
}

// Mistral-7B-v0.1's config.json: a 4096-token window on every layer.
constexpr char kMistral7B[] = R"({
  "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})";

TEST(ModelConfigTest, ReadsSlidingWindowsAsTransformersDoes) {
  auto mistral = ParseModelConfig(kMistral7B, "config.json");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->sliding_window, 4096);
  for (int64_t layer : {0, 31}) EXPECT_EQ(mistral->AttentionWindow(layer), 4096);
  EXPECT_EQ(mistral->NumParameters(), 7241732096);  // 7.24B
  auto again = ParseModelConfig(ModelConfigToJson(*mistral), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->sliding_window, 4096);
  // MistralConfig's default is 4096 when the field is absent; null is none.
  const std::string tiny =
      R"("architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 3, "num_attention_heads": 4, "vocab_size": 100)";
  EXPECT_EQ(ParseModelConfig("{" + tiny + "}", "c")->sliding_window, 4096);
  EXPECT_EQ(ParseModelConfig("{" + tiny + R"(, "sliding_window": null})", "c")->sliding_window, 0);
  // Qwen: only with use_sliding_window, from max_window_layers on.
  const std::string qwen =
      R"("architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 3, "num_attention_heads": 4, "vocab_size": 100,
         "sliding_window": 16, "max_window_layers": 1)";
  auto off = ParseModelConfig("{" + qwen + "}", "c");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->AttentionWindow(2), 0);
  EXPECT_EQ(off->head_dim, 128);  // Qwen3Config's default, not 64 / 4
  auto on = ParseModelConfig("{" + qwen + R"(, "use_sliding_window": true})", "c");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->AttentionWindow(0), 0);
  EXPECT_EQ(on->AttentionWindow(1), 16);
  EXPECT_EQ(on->AttentionWindow(2), 16);
  auto written = ParseModelConfig(ModelConfigToJson(*on), "written");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->AttentionWindow(0), 0);
  EXPECT_EQ(written->AttentionWindow(1), 16);
  // layer_types, where given, says which layers slide.
  auto typed = ParseModelConfig(
      "{" + qwen +
          R"(, "use_sliding_window": true, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]})",
      "c");
  ASSERT_TRUE(typed.ok()) << typed.status();
  EXPECT_EQ(typed->AttentionWindow(0), 16);
  EXPECT_EQ(typed->AttentionWindow(1), 0);
  EXPECT_EQ(typed->AttentionWindow(2), 16);
  auto typed_again = ParseModelConfig(ModelConfigToJson(*typed), "written");
  ASSERT_TRUE(typed_again.ok()) << typed_again.status();
  EXPECT_EQ(ModelConfigToJson(*typed_again), ModelConfigToJson(*typed));
  // Llama has no window, whatever the file says.
  EXPECT_EQ(
      ParseModelConfig(
          R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
                    "sliding_window": 16})",
          "c")
          ->sliding_window,
      0);
}

TEST(ModelConfigTest, DefaultsFollowTransformers) {
  auto config = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})",
      "c.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_DOUBLE_EQ(config->rope_theta, 10000.0);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FALSE(config->attention_bias);
}

TEST(ModelConfigTest, RoundTripsThroughJson) {
  auto config = ParseModelConfig(kLlama31_8B, "config.json");
  ASSERT_TRUE(config.ok());
  auto again = ParseModelConfig(ModelConfigToJson(*config), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ModelConfigToJson(*again), ModelConfigToJson(*config));
  EXPECT_EQ(again->NumParameters(), config->NumParameters());
  EXPECT_EQ(again->eos_token_ids, config->eos_token_ids);
}

// An FP8 checkpoint's quantization_config as llm-compressor writes it
// (FP8_DYNAMIC: per-channel weights, dynamic per-token activations).
#define FP8_BASE \
  R"("architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100)"
#define FP8_GROUP(weights, activations)                                                                                                                                                           \
  R"("quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "weights": )" weights \
  R"(, "input_activations": )" activations "}}}"
#define FP8_CHANNEL \
  R"({"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": false, "symmetric": true})"
#define FP8_TOKEN \
  R"({"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": true})"

TEST(ModelConfigTest, ParsesCompressedTensorsFp8) {
  auto config = ParseModelConfig("{" FP8_BASE ", " FP8_GROUP(FP8_CHANNEL, FP8_TOKEN) "}", "c");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->quantization.has_value());
  EXPECT_TRUE(config->quantization->per_channel);
  EXPECT_EQ(config->quantization->ignore, std::vector<std::string>{"lm_head"});
  auto again = ParseModelConfig(ModelConfigToJson(*config), "written");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ModelConfigToJson(*again), ModelConfigToJson(*config));
  auto per_tensor = ParseModelConfig(
      "{" FP8_BASE
      ", " FP8_GROUP(R"({"num_bits": 8, "type": "float", "strategy": "tensor"})", "null") "}",
      "c");
  ASSERT_TRUE(per_tensor.ok()) << per_tensor.status();
  EXPECT_FALSE(per_tensor->quantization->per_channel);
  EXPECT_FALSE(ParseModelConfig("{" FP8_BASE "}", "c")->quantization.has_value());
}

struct BadConfig {
  const char* json;
  const char* expected;  // substring of the error
};

class BadModelConfigTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(BadModelConfigTest, ErrorNamesFileAndField) {
  auto config = ParseModelConfig(GetParam().json, "dir/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              AllOf(HasSubstr("dir/config.json"), HasSubstr(GetParam().expected)));
}

#define BASE \
  R"("architectures": ["LlamaForCausalLM"], "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 100)"
INSTANTIATE_TEST_SUITE_P(
    Fields, BadModelConfigTest,
    ::testing::Values(
        BadConfig{"{nope", "not valid JSON"}, BadConfig{"[]", "not a JSON object"},
        BadConfig{"{" BASE R"(, "num_attention_heads": 4})", "\"hidden_size\" is missing"},
        BadConfig{"{" BASE R"(, "hidden_size": "64", "num_attention_heads": 4})",
                  "\"hidden_size\" must be an integer"},
        BadConfig{"{" BASE R"(, "hidden_size": 64, "num_attention_heads": 0})",
                  "\"num_attention_heads\" must be positive"},
        BadConfig{"{" BASE
                  R"(, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3})",
                  "\"num_key_value_heads\" (3) must divide num_attention_heads (4)"},
        BadConfig{"{" BASE R"(, "hidden_size": 64, "num_attention_heads": 4, "head_dim": 15})",
                  "\"head_dim\" must be even"},
        BadConfig{"{" BASE R"(, "hidden_size": 60, "num_attention_heads": 8})",
                  "\"hidden_size\" (60) must be divisible by num_attention_heads (8)"},
        BadConfig{"{" BASE
                  R"(, "hidden_size": 64, "num_attention_heads": 4, "tie_word_embeddings": 1})",
                  "\"tie_word_embeddings\" must be true or false"},
        BadConfig{
            "{" BASE
            R"(, "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
            "rope_scaling of type \"yarn\" is not supported"},
        BadConfig{
            "{" FP8_BASE ", " FP8_GROUP(
                R"({"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [64, 64]})",
                FP8_TOKEN) "}",
            "only 128 x 128 block scales are supported"},
        BadConfig{
            "{" QWEN3_32B
            R"(, "quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 128]})"
            "}",
            "\"quantization_config.weight_block_size\" is [64, 128]"},
        BadConfig{
            "{" QWEN3_32B
            R"(, "quantization_config": {"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]})"
            "}",
            "activation_scheme \"static\" is not supported"},
        BadConfig{
            R"({"architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "sliding_window": -4096})",
            "\"sliding_window\" must be positive"},
        BadConfig{
            "{" FP8_BASE ", " FP8_GROUP(
                FP8_CHANNEL,
                R"({"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false})") "}",
            "static activation scales are not supported"},
        BadConfig{
            "{" FP8_BASE
            ", " FP8_GROUP(R"({"num_bits": 4, "type": "int", "strategy": "group"})", "null") "}",
            "must be 8-bit floats"},
        BadConfig{"{" FP8_BASE R"(, "quantization_config": {"quant_method": "gptq", "bits": 4}})",
                  "quant_method \"gptq\" is not supported"},
        BadConfig{
            "{" FP8_BASE
            R"(, "quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {"num_bits": "8"}}}}})",
            "must be 8-bit floats"},
        BadConfig{
            "{" BASE
            R"(, "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"factor": 4.0}})",
            "\"rope_scaling\" has no \"rope_type\""},
        BadConfig{
            "{" BASE
            R"(, "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}})",
            "\"rope_scaling\""},
        BadConfig{"{" BASE
                  R"(, "hidden_size": 64, "num_attention_heads": 4, "eos_token_id": [1, "x"]})",
                  "\"eos_token_id\" must hold integers"},
        BadConfig{"{" BASE R"(, "hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 100})",
                  "outside the vocabulary"},
        BadConfig{R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 64})",
                  "architecture GPT2LMHeadModel is not supported"}));
#undef BASE

}  // namespace
}  // namespace shift
