// The single-rank engine against a naive full-sequence forward (no paging, no
// batching, double accumulation), and bit-for-bit invariance of a sequence's
// logits and tokens to batching and to how its prefill is chunked: Llama,
// Qwen 2 and 3, FP8 with per-channel and 128x128 block scales, and
// Mistral's sliding window.
#include "worker/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <sstream>

#include "common/model_schema.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift {
namespace {

// Naive forward of one whole sequence, returning the last position's logits.
class NaiveModel {
 public:
  explicit NaiveModel(const ModelFiles& files) : c_(files.config), ckpt_(*files.checkpoint) {}

  std::vector<float> LastLogits(const std::vector<int32_t>& tokens) const {
    const int64_t n = tokens.size(), d = c_.hidden_size, hd = c_.head_dim,
                  heads = c_.num_attention_heads, kvh = c_.num_key_value_heads;
    std::vector<double> h(n * d);
    const auto emb = W("model.embed_tokens.weight", {c_.vocab_size, d});
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) h[t * d + i] = emb[tokens[t] * d + i];
    }
    for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto x = Norm(h, n, W(p + "input_layernorm.weight", {d}));
      auto q = MatMul(x, n, d, W(p + "self_attn.q_proj.weight", {heads * hd, d}), heads * hd);
      auto k = MatMul(x, n, d, W(p + "self_attn.k_proj.weight", {kvh * hd, d}), kvh * hd);
      auto v = MatMul(x, n, d, W(p + "self_attn.v_proj.weight", {kvh * hd, d}), kvh * hd);
      if (c_.attention_bias) {
        AddBias(&q, W(p + "self_attn.q_proj.bias", {heads * hd}));
        AddBias(&k, W(p + "self_attn.k_proj.bias", {kvh * hd}));
        AddBias(&v, W(p + "self_attn.v_proj.bias", {kvh * hd}));
      }
      if (c_.qk_norm) {  // Qwen 3: each head of q and k normalized on its own
        q = Norm(q, n * heads, W(p + "self_attn.q_norm.weight", {hd}), hd);
        k = Norm(k, n * kvh, W(p + "self_attn.k_norm.weight", {hd}), hd);
      }
      Rope(&q, n, heads);
      Rope(&k, n, kvh);
      // A key at j is visible to the query at t when 0 <= t - j < window.
      const int64_t window = c_.AttentionWindow(l);
      std::vector<double> attn(n * heads * hd, 0.0);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t from = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        for (int64_t hh = 0; hh < heads; ++hh) {
          const int64_t g = hh / (heads / kvh);
          std::vector<double> s(t + 1, -INFINITY);
          double mx = -INFINITY, total = 0;
          for (int64_t j = from; j <= t; ++j) {
            double dot = 0;
            for (int64_t i = 0; i < hd; ++i)
              dot += q[(t * heads + hh) * hd + i] * k[(j * kvh + g) * hd + i];
            s[j] = dot / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[j]);
          }
          for (double& e : s) total += (e = std::exp(e - mx));
          for (int64_t j = from; j <= t; ++j) {
            for (int64_t i = 0; i < hd; ++i) {
              attn[(t * heads + hh) * hd + i] += s[j] / total * v[(j * kvh + g) * hd + i];
            }
          }
        }
      }
      auto o = MatMul(attn, n, heads * hd, W(p + "self_attn.o_proj.weight", {d, heads * hd}), d);
      for (int64_t i = 0; i < n * d; ++i) h[i] += o[i];
      x = Norm(h, n, W(p + "post_attention_layernorm.weight", {d}));
      const int64_t in = c_.intermediate_size;
      auto gate = MatMul(x, n, d, W(p + "mlp.gate_proj.weight", {in, d}), in);
      auto up = MatMul(x, n, d, W(p + "mlp.up_proj.weight", {in, d}), in);
      for (int64_t i = 0; i < n * in; ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      o = MatMul(gate, n, in, W(p + "mlp.down_proj.weight", {d, in}), d);
      for (int64_t i = 0; i < n * d; ++i) h[i] += o[i];
    }
    std::vector<double> last(h.end() - d, h.end());
    last = Norm(last, 1, W("model.norm.weight", {d}));
    const auto head = c_.tie_word_embeddings ? emb : W("lm_head.weight", {c_.vocab_size, d});
    auto logits = MatMul(last, 1, d, head, c_.vocab_size);
    return std::vector<float>(logits.begin(), logits.end());
  }

 private:
  std::vector<float> W(const std::string& name, std::vector<int64_t> shape) const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> out(n);
    // Matrices through the loader's dequantization (FP8 checkpoints).
    EXPECT_TRUE((shape.size() == 2
                     ? ReadWeightAsF32(ckpt_, c_, name, shape[0], shape[1], out.data())
                     : ckpt_.ReadAsF32(name, shape, out.data()))
                    .ok())
        << name;
    return out;
  }
  static std::vector<double> MatMul(const std::vector<double>& x, int64_t rows, int64_t k,
                                    const std::vector<float>& w, int64_t n) {
    std::vector<double> y(rows * n, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < k; ++i) acc += x[r * k + i] * w[j * k + i];
        y[r * n + j] = acc;
      }
    }
    return y;
  }
  // RMSNorm of `rows` rows of `width` (the model's width unless given).
  std::vector<double> Norm(const std::vector<double>& x, int64_t rows, const std::vector<float>& w,
                           int64_t width = 0) const {
    const int64_t d = width > 0 ? width : c_.hidden_size;
    std::vector<double> y(rows * d);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
      const double inv = 1 / std::sqrt(ss / d + c_.rms_norm_eps);
      for (int64_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * w[i];
    }
    return y;
  }
  static void AddBias(std::vector<double>* y, const std::vector<float>& b) {
    for (size_t i = 0; i < y->size(); ++i) (*y)[i] += b[i % b.size()];
  }
  void Rope(std::vector<double>* x, int64_t n, int64_t heads) const {
    const int64_t hd = c_.head_dim, half = hd / 2;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        double* v = x->data() + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const double a = t / std::pow(c_.rope_theta, 2.0 * i / hd);
          const double x1 = v[i], x2 = v[i + half];
          v[i] = x1 * std::cos(a) - x2 * std::sin(a);
          v[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
        }
      }
    }
  }

  const ModelConfig& c_;
  const Checkpoint& ckpt_;
};

// Plays the router's part: blocks per sequence, chunked prefill, decode.
class Driver {
 public:
  explicit Driver(Engine* engine) : engine_(engine) {
    for (int32_t b = static_cast<int32_t>(engine->num_blocks()) - 1; b >= 0; --b)
      free_.push_back(b);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(5));
  }

  void Add(uint64_t id, std::vector<int32_t> prompt, kernels::SamplingParams sampling = {}) {
    seqs_[id] = {std::move(prompt), 0, {}, sampling, {}, {}};
  }

  // One step: each (id, count) computes the next `count` uncomputed tokens.
  void Step(const std::vector<std::pair<uint64_t, int64_t>>& plan) {
    std::vector<SequenceStep> batch;
    for (auto [id, count] : plan) {
      Seq& s = seqs_.at(id);
      SequenceStep step;
      step.seq_id = id;
      step.start_position = s.computed;
      step.token_ids.assign(s.tokens.begin() + s.computed, s.tokens.begin() + s.computed + count);
      while (static_cast<int64_t>(s.blocks.size()) * engine_->block_size() < s.computed + count) {
        s.blocks.push_back(free_.back());
        free_.pop_back();
      }
      step.block_table = s.blocks;
      step.sample = s.computed + count == static_cast<int64_t>(s.tokens.size());
      step.sampling = s.sampling;
      step.return_logits = true;
      s.computed += count;
      batch.push_back(std::move(step));
    }
    auto out = engine_->Step(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    for (EngineSample& t : *out) {
      Seq& s = seqs_.at(t.seq_id);
      s.history.push_back(s.tokens);  // the context these logits are for
      s.logits.push_back(std::move(t.logits));
      s.tokens.push_back(t.token_id);
    }
  }
  // Decodes every listed sequence once.
  void Decode(const std::vector<uint64_t>& ids) {
    std::vector<std::pair<uint64_t, int64_t>> plan;
    for (uint64_t id : ids) plan.push_back({id, 1});
    Step(plan);
  }

  struct Seq {
    std::vector<int32_t> tokens;
    int64_t computed;
    std::vector<int32_t> blocks;
    kernels::SamplingParams sampling;
    std::vector<std::vector<float>> logits;     // per sampled step
    std::vector<std::vector<int32_t>> history;  // context of each
  };
  const Seq& seq(uint64_t id) const { return seqs_.at(id); }

 private:
  Engine* engine_;
  std::vector<int32_t> free_;
  std::map<uint64_t, Seq> seqs_;
};

std::vector<int32_t> Prompt(int64_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> out(n);
  for (auto& t : out) t = static_cast<int32_t>(rng() % vocab);
  return out;
}

// Llama with GQA (fp32 weights), Qwen 2 (biases, tied embeddings), Llama
// with FP8 projections (dequantized on load), Qwen 3 (per-head q/k norms),
// Qwen 3 with 128 x 128 block-scaled FP8 projections (the tiny shapes cut
// every block: all partial), the same 128 wide (whole blocks and partial
// ones), and Mistral with a 16-token sliding window.
enum class TestModel {
  kLlamaGqa,
  kQwen2,
  kLlamaFp8,
  kQwen3,
  kQwen3Fp8Block,
  kQwen3Fp8BlockWide,
  kMistralWindow
};

// Writes `model` into `dir` and opens it.
std::unique_ptr<ModelFiles> WriteModel(TestModel model, const std::string& dir) {
  MkModelOptions options;
  options.config = *PresetConfig("tiny");
  options.seed = 17;
  options.dtype = model == TestModel::kLlamaFp8 ? DType::kF8E4M3 : DType::kF32;
  switch (model) {
    case TestModel::kQwen2:
      options.config.architecture = "Qwen2ForCausalLM";
      options.config.attention_bias = true;
      options.config.tie_word_embeddings = true;
      break;
    case TestModel::kQwen3:
      options.config = *PresetConfig("tiny-qwen3");
      break;
    case TestModel::kQwen3Fp8Block:
    case TestModel::kQwen3Fp8BlockWide:
      options.config = *PresetConfig("tiny-qwen3");
      if (model == TestModel::kQwen3Fp8BlockWide) {
        options.config.num_attention_heads = 8;
        options.config.hidden_size = 128;
        options.config.intermediate_size = 320;  // two whole blocks and a partial one
      }
      options.dtype = DType::kF8E4M3;
      options.fp8_block = 128;
      break;
    case TestModel::kMistralWindow:
      options.config = *PresetConfig("tiny-mistral");
      break;
    default:
      break;
  }
  EXPECT_TRUE(WriteRandomModel(dir, options).ok());
  auto files = OpenModelFiles(dir);
  EXPECT_TRUE(files.ok()) << files.status();
  return files.ok() ? std::make_unique<ModelFiles>(*std::move(files)) : nullptr;
}

std::unique_ptr<Engine> NewEngine(const ModelFiles& files) {
  EngineOptions options;
  options.kv_cache_bytes = 8 << 20;
  options.block_size = 4;
  auto engine = Engine::Create(files, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

class EngineTest : public ::testing::TestWithParam<TestModel> {
 protected:
  void SetUp() override {
    files_ = WriteModel(GetParam(), tmp_.Sub("model"));
    ASSERT_NE(files_, nullptr);
  }
  std::unique_ptr<Engine> NewEngine() { return shift::NewEngine(*files_); }

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
};

// Mistral's 16-token sliding window.
class SlidingWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = WriteModel(TestModel::kMistralWindow, tmp_.Sub("model"));
    ASSERT_NE(files_, nullptr);
  }

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
};

double MaxRelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(want[i])));
  }
  return max_diff / max_abs;
}

TEST_P(EngineTest, MixedChunkedBatchMatchesNaiveForward) {
  auto engine = NewEngine();
  Driver driver(engine.get());
  const int32_t vocab = 900;
  driver.Add(1, Prompt(23, 1, vocab));
  driver.Add(2, Prompt(9, 2, vocab));
  driver.Add(3, Prompt(31, 3, vocab));
  // Prefill in chunks of several sizes, mixed with other sequences' chunks
  // and decodes.
  driver.Step({{1, 7}, {2, 9}});           // 2 finishes its prompt, samples
  driver.Step({{2, 1}, {1, 10}, {3, 5}});  // 2 decodes
  driver.Step({{2, 1}, {1, 6}, {3, 13}});  // 1 finishes
  driver.Step({{1, 1}, {2, 1}, {3, 13}});  // 3 finishes
  for (int step = 0; step < 22; ++step) driver.Decode({1, 2, 3});

  NaiveModel naive(*files_);
  double worst = 0;
  for (uint64_t id : {1, 2, 3}) {
    const auto& s = driver.seq(id);
    ASSERT_GE(s.logits.size(), 23u);
    for (size_t i = 0; i < s.logits.size(); ++i) {
      const auto want = naive.LastLogits(s.history[i]);
      // Random weights still give logits far from zero and from each other.
      EXPECT_GT(
          *std::max_element(want.begin(), want.end()) - *std::min_element(want.begin(), want.end()),
          0.1);
      const double error = MaxRelativeError(s.logits[i], want);
      worst = std::max(worst, error);
      EXPECT_LE(error, 1e-4) << "seq " << id << " step " << i;
    }
  }
  std::ostringstream worst_text;
  worst_text << worst;
  RecordProperty("max_relative_error", worst_text.str());
}

TEST_P(EngineTest, LogitsAndTokensIgnoreBatchingAndChunking) {
  kernels::SamplingParams sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 50;
  sampling.seed = 99;
  const auto prompt = Prompt(19, 7, 900);
  // The same sequence five ways: alone in one chunk; alone in chunks of
  // 5, 8, 6; one token at a time; and twice inside batches of others.
  std::vector<std::vector<std::vector<float>>> logits;
  std::vector<std::vector<int32_t>> tokens;
  auto record = [&](const Driver& d) {
    logits.push_back(d.seq(42).logits);
    tokens.push_back(d.seq(42).tokens);
  };
  {
    auto engine = NewEngine();
    Driver d(engine.get());
    d.Add(42, prompt, sampling);
    d.Step({{42, 19}});
    for (int i = 0; i < 12; ++i) d.Decode({42});
    record(d);
  }
  {
    auto engine = NewEngine();
    Driver d(engine.get());
    d.Add(42, prompt, sampling);
    d.Step({{42, 5}});
    d.Step({{42, 8}});
    d.Step({{42, 6}});
    for (int i = 0; i < 12; ++i) d.Decode({42});
    record(d);
  }
  {
    auto engine = NewEngine();
    Driver d(engine.get());
    d.Add(42, prompt, sampling);
    for (int i = 0; i < 19; ++i) d.Step({{42, 1}});
    for (int i = 0; i < 12; ++i) d.Decode({42});
    record(d);
  }
  for (int variant = 0; variant < 2; ++variant) {
    auto engine = NewEngine();
    Driver d(engine.get());
    d.Add(7, Prompt(40, 8, 900));
    d.Add(42, prompt, sampling);
    d.Add(8, Prompt(3, 9, 900), sampling);
    if (variant == 0) {
      d.Step({{7, 11}, {42, 19}, {8, 3}});
      for (int i = 0; i < 12; ++i) d.Step({{8, 1}, {42, 1}, {7, 2}});
    } else {
      d.Step({{8, 3}, {7, 20}, {42, 4}});
      d.Step({{8, 1}, {42, 15}, {7, 20}});
      for (int i = 0; i < 12; ++i) d.Decode({7, 8, 42});
    }
    record(d);
  }
  for (size_t v = 1; v < logits.size(); ++v) {
    EXPECT_EQ(tokens[v], tokens[0]) << "variant " << v;
    ASSERT_EQ(logits[v].size(), logits[0].size()) << "variant " << v;
    for (size_t i = 0; i < logits[0].size(); ++i) {
      ASSERT_EQ(std::memcmp(logits[v][i].data(), logits[0][i].data(),
                            logits[0][i].size() * sizeof(float)),
                0)
          << "variant " << v << " step " << i;
    }
  }
}

TEST_P(EngineTest, BadStepsAreRefusedWithoutDamage) {
  auto engine = NewEngine();
  SequenceStep s;
  s.seq_id = 1;
  s.token_ids = {1, 2, 3, 4, 5};
  s.block_table = {0};  // needs 2 blocks of 4
  EXPECT_EQ(engine->Step({s}).status().code(), absl::StatusCode::kInvalidArgument);
  s.block_table = {0, static_cast<int32_t>(engine->num_blocks())};
  EXPECT_EQ(engine->Step({s}).status().code(), absl::StatusCode::kInvalidArgument);
  s.block_table = {0, 1};
  s.token_ids[2] = 5000;
  EXPECT_EQ(engine->Step({s}).status().code(), absl::StatusCode::kInvalidArgument);
  s.token_ids[2] = 3;
  s.sample = true;
  auto ok = engine->Step({s});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 1u);
}

// Mistral's window over long prompts: 100-token prompts prefilled in chunks
// of several sizes (a chunk's queries straddle the window's edge, and most
// of each prompt falls out of it), then decodes, against the naive forward.
TEST_F(SlidingWindowTest, LongPromptsInChunksMatchTheNaiveForward) {
  ASSERT_EQ(files_->config.sliding_window, 16);
  auto engine = NewEngine(*files_);
  Driver driver(engine.get());
  const int32_t vocab = 900;
  driver.Add(1, Prompt(100, 11, vocab));
  driver.Add(2, Prompt(100, 12, vocab));
  driver.Step({{1, 37}, {2, 5}});
  driver.Step({{1, 16}, {2, 60}});
  driver.Step({{1, 47}, {2, 35}});  // both sample
  for (int step = 0; step < 6; ++step) driver.Decode({1, 2});
  NaiveModel naive(*files_);
  for (uint64_t id : {1, 2}) {
    const auto& s = driver.seq(id);
    ASSERT_EQ(s.logits.size(), 7u);
    for (size_t i = 0; i < s.logits.size(); ++i) {
      EXPECT_LE(MaxRelativeError(s.logits[i], naive.LastLogits(s.history[i])), 1e-4)
          << "seq " << id << " step " << i;
    }
  }
  // The window matters: without it the logits differ.
  ModelFiles full = *OpenModelFiles(tmp_.Sub("model"));
  full.config.sliding_window = 0;
  const auto& s = driver.seq(1);
  EXPECT_GT(MaxRelativeError(s.logits[0], NaiveModel(full).LastLogits(s.history[0])), 1e-3);
}

// A window as long as any context can be (max_position_embeddings) gives
// the bits of no window at all.
TEST_F(SlidingWindowTest, AWindowAsLongAsTheContextChangesNothing) {
  const auto prompt = Prompt(40, 21, 900);
  std::vector<std::vector<std::vector<float>>> logits;
  for (int64_t window : {int64_t{0}, files_->config.max_position_embeddings}) {
    ModelFiles files = *OpenModelFiles(tmp_.Sub("model"));
    files.config.sliding_window = window;
    auto engine = NewEngine(files);
    ASSERT_NE(engine, nullptr);
    Driver d(engine.get());
    d.Add(1, prompt);
    d.Step({{1, 40}});
    for (int i = 0; i < 4; ++i) d.Decode({1});
    logits.push_back(d.seq(1).logits);
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i) {
    EXPECT_EQ(
        std::memcmp(logits[0][i].data(), logits[1][i].data(), logits[0][i].size() * sizeof(float)),
        0)
        << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineTest,
                         ::testing::Values(TestModel::kLlamaGqa, TestModel::kQwen2,
                                           TestModel::kLlamaFp8, TestModel::kQwen3,
                                           TestModel::kQwen3Fp8Block, TestModel::kQwen3Fp8BlockWide,
                                           TestModel::kMistralWindow),
                         [](const auto& info) {
                           switch (info.param) {
                             case TestModel::kQwen2:
                               return "Qwen2";
                             case TestModel::kLlamaFp8:
                               return "LlamaFp8";
                             case TestModel::kQwen3:
                               return "Qwen3";
                             case TestModel::kQwen3Fp8Block:
                               return "Qwen3Fp8Block";
                             case TestModel::kQwen3Fp8BlockWide:
                               return "Qwen3Fp8BlockWide";
                             case TestModel::kMistralWindow:
                               return "MistralWindow";
                             default:
                               return "LlamaGqa";
                           }
                         });

}  // namespace
}  // namespace shift
