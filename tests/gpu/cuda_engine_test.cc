// The whole model on the CUDA backend against the CPU engine, teacher-forced:
// small generated models (Llama with GQA, llama3 RoPE scaling, Qwen 2 with
// q/k/v biases and tied embeddings, FP8, Qwen 3, block-scaled FP8, a
// sliding window), a 300-token prompt whose first 64
// tokens are one prefill chunk and whose other tokens, and 16 more the CPU
// engine generated, are fed one per step beside another sequence's steps.
// At every fed position the CUDA engine's top-1 must be the CPU's for at
// least 99% of positions, and the logits' normalised mean squared error must
// stay under a stated bound; a second CUDA engine running the same steps
// must give the same bits, and decode steps replayed from CUDA graphs the
// bits of the same padded steps run eagerly. Skips, saying why, without a
// GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backends.h"
#include "tests/testing/logit_agreement.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"

namespace shift {
namespace {

// bf16 weights and activations against the fp32 CPU engine.
constexpr double kMaxNmse = 1e-2;
constexpr double kMinTop1 = 0.99;              // over decisive positions
constexpr double kMinTop1AllPositions = 0.97;  // near-ties included

struct Model {
  std::string name;
  MkModelOptions options;
};

std::vector<Model> Models() {
  std::vector<Model> models;
  MkModelOptions llama;
  llama.config = *PresetConfig("tiny");
  llama.config.num_key_value_heads = 2;
  llama.dtype = DType::kF32;
  llama.seed = 31;
  models.push_back({"LlamaGqa", llama});
  MkModelOptions scaled = llama;
  scaled.config.rope_scaling = Llama3RopeScaling{};
  scaled.config.rope_scaling->original_max_position_embeddings = 256;
  models.push_back({"LlamaRopeScaling", scaled});
  MkModelOptions qwen = llama;
  qwen.config.architecture = "Qwen2ForCausalLM";
  qwen.config.attention_bias = true;
  qwen.config.tie_word_embeddings = true;
  models.push_back({"Qwen2", qwen});
  // FP8 projections (compressed-tensors, per-channel scales): the CPU
  // dequantizes them on load, the GPU runs FP8 GEMMs (activations quantized
  // per token) on sm_89 and later, bf16 on the dequantized weights below.
  MkModelOptions fp8 = llama;
  fp8.dtype = DType::kF8E4M3;
  models.push_back({"LlamaFp8", fp8});
  // Qwen 3 (per-head q/k norms), in fp32 and with 128x128 block-scaled FP8
  // projections (dequantized to bf16 on the GPU), and Mistral with a
  // 16-token sliding window over the 300-token prompt.
  MkModelOptions qwen3 = llama;
  qwen3.config = *PresetConfig("tiny-qwen3");
  models.push_back({"Qwen3", qwen3});
  MkModelOptions qwen3_fp8 = qwen3;
  qwen3_fp8.dtype = DType::kF8E4M3;
  qwen3_fp8.fp8_block = 128;
  models.push_back({"Qwen3Fp8Block", qwen3_fp8});
  MkModelOptions mistral = llama;
  mistral.config = *PresetConfig("tiny-mistral");
  models.push_back({"MistralWindow", mistral});
  return models;
}

// Runs the schedule on `engine`: sequence 1 feeds `fed` (its first 64
// tokens as one chunk, then one token a step), sequence 2 a shorter prompt
// beside it. Returns sequence 1's logits at every step it sampled.
std::vector<std::vector<float>> RunSchedule(Engine& engine, const std::vector<int32_t>& fed,
                                            const std::vector<int32_t>& other) {
  std::vector<std::vector<float>> logits;
  auto blocks = [&](int64_t first, int64_t tokens) {
    std::vector<int32_t> table;
    for (int64_t b = 0; b * engine.block_size() < tokens; ++b) {
      table.push_back(static_cast<int32_t>(first + b));
    }
    return table;
  };
  const std::vector<int32_t> table1 = blocks(0, 512), table2 = blocks(64, 512);
  int64_t done1 = 0, done2 = 0;
  while (done1 < static_cast<int64_t>(fed.size())) {
    std::vector<SequenceStep> batch;
    const int64_t count1 = done1 == 0 ? 64 : 1;
    SequenceStep s1;
    s1.seq_id = 1;
    s1.start_position = done1;
    s1.token_ids.assign(fed.begin() + done1, fed.begin() + done1 + count1);
    s1.block_table = table1;
    s1.sample = s1.return_logits = true;
    batch.push_back(s1);
    if (done2 < static_cast<int64_t>(other.size())) {
      SequenceStep s2;
      s2.seq_id = 2;
      s2.start_position = done2;
      const int64_t count2 = std::min<int64_t>(16, other.size() - done2);
      s2.token_ids.assign(other.begin() + done2, other.begin() + done2 + count2);
      s2.block_table = table2;
      s2.sample = done2 + count2 == static_cast<int64_t>(other.size());
      batch.push_back(s2);
      done2 += count2;
    }
    auto out = engine.Step(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return logits;
    logits.push_back((*out)[0].logits);
    done1 += count1;
  }
  return logits;
}

// A CUDA engine; an FP8 model on a GPU without FP8 GEMMs (below sm_89,
// which refuses them) runs in bf16 on the dequantized weights.
absl::StatusOr<std::unique_ptr<Engine>> CudaEngine(const ModelFiles& files, EngineOptions options) {
  options.device = kernels::Device::kCuda;
  auto engine = Engine::Create(files, options);
  if (!engine.ok() && absl::IsFailedPrecondition(engine.status()) && options.fp8_gemm) {
    std::printf("FP8 GEMMs refused (%s): bf16 instead\n",
                std::string(engine.status().message()).c_str());
    options.fp8_gemm = false;
    engine = Engine::Create(files, options);
  }
  return engine;
}

class CudaEngineTest : public ::testing::TestWithParam<Model> {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no GPU present: " << why;
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), GetParam().options).ok());
  }
  static EngineOptions Options() {
    EngineOptions options;
    options.kv_cache_bytes = 64 << 20;
    options.block_size = 16;
    return options;
  }

  testing::TestTempDir tmp_;
};

TEST_P(CudaEngineTest, TeacherForcedLogitsFollowTheCpuEngine) {
  auto files = OpenModelFiles(tmp_.Sub("model"));
  ASSERT_TRUE(files.ok()) << files.status();
  const EngineOptions options = Options();
  auto cpu = Engine::Create(*files, options);
  auto gpu = CudaEngine(*files, options);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(gpu.ok()) << gpu.status();

  std::mt19937 rng(5);
  const int32_t vocab = static_cast<int32_t>(files->config.vocab_size);
  std::vector<int32_t> prompt(300), other(100);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);
  for (int32_t& t : other) t = static_cast<int32_t>(rng() % vocab);
  // The CPU engine's greedy continuation: 16 tokens after the prompt.
  std::vector<int32_t> fed = prompt;
  for (int i = 0; i < 16; ++i) {
    const auto logits = RunSchedule(**cpu, fed, other);
    ASSERT_FALSE(logits.empty());
    const std::vector<float>& last = logits.back();
    fed.push_back(static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin()));
  }
  const auto want = RunSchedule(**cpu, fed, other), got = RunSchedule(**gpu, fed, other);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(want[i].size(), got[i].size());
  const testing::LogitAgreement a = testing::CompareLogits(want, got);
  std::printf(
      "%s: top-1 agreement %.4f over %zu positions (%.4f over the %d decisive ones), logit NMSE "
      "%.3g\n",
      GetParam().name.c_str(), a.top1, a.rows, a.decisive_top1, a.decisive, a.nmse);
  EXPECT_GE(a.decisive_top1, kMinTop1);
  EXPECT_GE(a.top1, kMinTop1AllPositions);
  EXPECT_LT(a.nmse, kMaxNmse);

  // Run to run on the GPU: a second engine, the same steps, the same bits.
  auto again = CudaEngine(*files, options);
  ASSERT_TRUE(again.ok()) << again.status();
  const auto repeated = RunSchedule(**again, fed, other);
  ASSERT_EQ(repeated.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(repeated[i], got[i]) << "step " << i << " differs between two runs";
  }
}

// Decode steps replayed from CUDA graphs give the bits of the same padded
// steps run eagerly (the same kernels, launches and GEMM algorithms), and
// graphs are recorded once per bucket and table width.
TEST_P(CudaEngineTest, DecodeGraphsReplayTheEagerPaddedBits) {
  auto files = OpenModelFiles(tmp_.Sub("model"));
  ASSERT_TRUE(files.ok()) << files.status();
  EngineOptions options = Options();
  auto graphs = CudaEngine(*files, options);
  options.enforce_eager = true;
  options.pad_decodes = true;
  auto padded = CudaEngine(*files, options);
  ASSERT_TRUE(graphs.ok()) << graphs.status();
  ASSERT_TRUE(padded.ok()) << padded.status();
  std::mt19937 rng(7);
  const int32_t vocab = static_cast<int32_t>(files->config.vocab_size);
  std::vector<int32_t> prompt(300), other(100);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);
  for (int32_t& t : other) t = static_cast<int32_t>(rng() % vocab);
  const auto a = RunSchedule(**graphs, prompt, other), b = RunSchedule(**padded, prompt, other);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "step " << i;
  EXPECT_GT((*graphs)->num_decode_graphs(), 0);
  // One bucket (a batch of one), at most two table widths.
  EXPECT_LE((*graphs)->num_decode_graphs(), 2);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaEngineTest, ::testing::ValuesIn(Models()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace shift
