// A worker group of P ranks (threads of this process, Gloo over TCP on
// 127.0.0.1) runs steps in TP, SP or any mix of them and reproduces the
// single-rank engine's logits and tokens bit for bit, including a sequence
// prefilled in one mode and decoded in the other, and Hkv < P; in pure SP
// (sp = P) and in hybrid layouts (sp, tp), whose ranks hold 1/tp of the
// weights.
#include <algorithm>
#include <cstring>
#include <random>
#include <thread>

#include "core/scheduler.h"
#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/backends.h"
#include "tests/testing/recorded_run.h"
#include "tests/testing/recording_backend.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/gloo_communicator.h"
#include "worker/staged_communicator.h"

namespace shift {
namespace {

// Llama; Qwen 2 (q/k/v biases); Qwen 3 (per-head q/k norms); Qwen 3 with
// 128 x 128 block-scaled FP8 projections, whose shards cut blocks (the tiny
// shapes make every block partial; `wide` ones have whole blocks too); and
// Mistral with a 16-token sliding window.
enum Family { kLlama, kQwen2, kQwen3, kQwen3Fp8Block, kMistralWindow };

const char* FamilyName(Family family) {
  switch (family) {
    case kQwen2:
      return "Qwen2";
    case kQwen3:
      return "Qwen3";
    case kQwen3Fp8Block:
      return "Qwen3Fp8Block";
    case kMistralWindow:
      return "MistralWindow";
    default:
      return "";
  }
}

struct Case {
  int ranks;
  int64_t kv_heads;
  Family family;
  int sp = 0;         // the base mode's Ulysses degree (0: P, pure SP)
  bool wide = false;  // 8 query heads and a 256-wide MLP: splits over 8 ranks
  int layout_sp() const { return sp > 0 ? sp : ranks; }
};

using testing::Options;
using testing::Recording;
using testing::RecordingBackend;
using testing::RecordSingleRank;

class ParallelEngineTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    MkModelOptions options;
    const Family family = GetParam().family;
    options.config = *PresetConfig(family == kMistralWindow                       ? "tiny-mistral"
                                   : family == kQwen3 || family == kQwen3Fp8Block ? "tiny-qwen3"
                                                                                  : "tiny");
    options.config.num_key_value_heads = GetParam().kv_heads;
    if (GetParam().wide) {
      options.config.num_attention_heads = 8;
      options.config.hidden_size = 128;
      options.config.intermediate_size = 256;
    }
    options.seed = 23;
    options.dtype = DType::kF32;
    if (family == kQwen2) {
      options.config.architecture = "Qwen2ForCausalLM";
      options.config.attention_bias = true;
    }
    if (family == kQwen3Fp8Block) {
      options.dtype = DType::kF8E4M3;
      options.fp8_block = 128;
    }
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), options).ok());
    auto files = OpenModelFiles(tmp_.Sub("model"));
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = std::make_unique<ModelFiles>(*std::move(files));
    // A 16-token window over 100-token prompts in chunks.
    recording_ = RecordSingleRank(
        *files_, family == kMistralWindow ? testing::LongPrompts() : testing::ShortPrompts());
  }

  // Replays the recording on a group with `modes[i]` for step i; returns the
  // leader's outputs. With `calls`, each rank runs on a RecordingBackend and
  // (*calls)[r] receives what rank r's executor asked of it.
  // With `staged`, every collective goes through a StagedCommunicator that
  // stages even host buffers (the path ranks sharing a GPU take).
  std::vector<std::vector<EngineSample>> RunGroup(
      const std::vector<StepMode>& modes,
      std::vector<std::vector<RecordingBackend::Call>>* calls = nullptr, bool staged = false,
      const EngineOptions& options_in = Options(), bool graphs = false) {
    const int p = GetParam().ranks;
    EngineOptions options = options_in;
    options.sp_degree = GetParam().sp;
    gloo::rendezvous::HashStore store;
    std::vector<std::vector<EngineSample>> leader;
    std::vector<std::thread> threads;
    if (calls != nullptr) calls->assign(p, {});
    for (int r = 0; r < p; ++r) {
      threads.emplace_back([&, r] {
        auto files = OpenModelFiles(tmp_.Sub("model"));
        ASSERT_TRUE(files.ok());
        auto gloo = GlooCommunicator::Connect(store, "g0", r, p, "127.0.0.1",
                                              std::chrono::milliseconds(20000));
        ASSERT_TRUE(gloo.ok()) << gloo.status();
        std::unique_ptr<Communicator> comm_owned = *std::move(gloo);
        auto copier = kernels::CreateBackend(kernels::Device::kCpu, kernels::BackendOptions());
        ASSERT_TRUE(copier.ok());
        if (staged) {
          comm_owned = std::make_unique<StagedCommunicator>(std::move(comm_owned), copier->get(),
                                                            /*always_stage=*/true);
        }
        std::unique_ptr<Communicator>* comm = &comm_owned;
        auto recorder = std::make_unique<RecordingBackend>(graphs);
        const RecordingBackend* record = recorder.get();
        auto engine = calls == nullptr && !graphs
                          ? Engine::Create(*files, options, comm->get())
                          : Engine::Create(*files, options, comm->get(), std::move(recorder));
        ASSERT_TRUE(engine.ok()) << engine.status();
        for (size_t i = 0; i < recording_.steps.size(); ++i) {
          auto out = (*engine)->Step(recording_.steps[i], modes[i]);
          ASSERT_TRUE(out.ok()) << out.status();
          if (r == 0) {
            leader.push_back(*out);
          } else {
            EXPECT_TRUE(out->empty());
          }
        }
        if (calls != nullptr) (*calls)[r] = record->calls();
        if (graphs) {
          EXPECT_GT(record->replayed(), 0) << "rank " << r << " replayed no graph";
        }
        EXPECT_TRUE((*comm)->Barrier().ok());  // no teardown under a peer's feet
      });
    }
    for (auto& t : threads) t.join();
    return leader;
  }

  void ExpectSameAsSingleRank(const std::vector<StepMode>& modes, const std::string& name,
                              std::vector<std::vector<RecordingBackend::Call>>* calls = nullptr,
                              bool staged = false, const EngineOptions& options = Options(),
                              bool graphs = false) {
    const auto got = RunGroup(modes, calls, staged, options, graphs);
    ASSERT_EQ(got.size(), recording_.outputs.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].size(), recording_.outputs[i].size()) << name << " step " << i;
      for (size_t j = 0; j < got[i].size(); ++j) {
        const EngineSample &a = got[i][j], &b = recording_.outputs[i][j];
        EXPECT_EQ(a.seq_id, b.seq_id);
        EXPECT_EQ(a.token_id, b.token_id) << name << " step " << i;
        ASSERT_EQ(a.logits.size(), b.logits.size());
        EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)), 0)
            << name << " step " << i << " seq " << a.seq_id;
      }
    }
  }

  // TP and SP, one step each in turn.
  std::vector<StepMode> Alternating() const {
    std::vector<StepMode> modes;
    for (size_t i = 0; i < recording_.steps.size(); ++i) {
      modes.push_back(i % 2 ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
    }
    return modes;
  }

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
  Recording recording_;
};

TEST_P(ParallelEngineTest, EveryModeScheduleGivesTheSingleRankBits) {
  const size_t steps = recording_.steps.size();
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kTensorParallel), "all TP");
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kSequenceParallel), "all SP");
  std::vector<StepMode> alternating, random;
  std::mt19937 rng(GetParam().ranks);
  for (size_t i = 0; i < steps; ++i) {
    alternating.push_back(i % 2 ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
    random.push_back(rng() % 2 ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
  }
  ExpectSameAsSingleRank(alternating, "alternating");
  ExpectSameAsSingleRank(random, "random");
  // Prefill (steps 0-3) in one mode, decode in the other.
  std::vector<StepMode> sp_then_tp(steps, StepMode::kTensorParallel), tp_then_sp(steps);
  for (size_t i = 0; i < steps; ++i) {
    if (i < 4) sp_then_tp[i] = StepMode::kSequenceParallel;
    tp_then_sp[i] = i < 4 ? StepMode::kTensorParallel : StepMode::kSequenceParallel;
  }
  ExpectSameAsSingleRank(sp_then_tp, "prefill SP, decode TP");
  ExpectSameAsSingleRank(tp_then_sp, "prefill TP, decode SP");
}

// Collectives staged through host copies (StagedCommunicator, as ranks
// sharing one GPU run them) change nothing: same bits, both modes.
TEST_P(ParallelEngineTest, HostStagedCollectivesGiveTheSameBits) {
  if (GetParam().ranks == 8) GTEST_SKIP() << "groups of 8 run the mode schedules only (CI time)";
  ExpectSameAsSingleRank(Alternating(), "staged, alternating", nullptr, /*staged=*/true);
}

// Decode steps padded to batch buckets with the group's collectives inside
// (what a CUDA group records into graphs with NCCL) change nothing either:
// padding rows join the TP all-reduces and SP's token slices.
TEST_P(ParallelEngineTest, PaddedDecodesWithCollectivesGiveTheSameBits) {
  if (GetParam().ranks == 8) GTEST_SKIP() << "groups of 8 run the mode schedules only (CI time)";
  EngineOptions options = Options();
  options.pad_decodes = true;
  options.graphs_with_collectives = true;
  options.kv_cache_bytes += options.kv_cache_bytes / 8;  // room for the scratch block
  const size_t steps = recording_.steps.size();
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kTensorParallel), "padded TP",
                         nullptr, false, options);
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kSequenceParallel), "padded SP",
                         nullptr, false, options);
  ExpectSameAsSingleRank(Alternating(), "padded, alternating", nullptr, false, options);
}

// Decode steps recorded as graphs in pieces between the collectives (what a
// CUDA group sharing a GPU does), on a backend that records graphs as a GPU
// does, replayed piece by piece with the collectives run between: the
// single-rank bits, in TP, SP and alternating, staged collectives too.
TEST_P(ParallelEngineTest, DecodesRecordedInPiecesGiveTheSameBits) {
  if (GetParam().ranks == 8) GTEST_SKIP() << "groups of 8 run the mode schedules only (CI time)";
  EngineOptions options = Options();
  options.kv_cache_bytes += options.kv_cache_bytes / 8;  // room for the scratch block
  const size_t steps = recording_.steps.size();
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kTensorParallel), "pieces TP",
                         nullptr, false, options, /*graphs=*/true);
  ExpectSameAsSingleRank(std::vector<StepMode>(steps, StepMode::kSequenceParallel), "pieces SP",
                         nullptr, false, options, /*graphs=*/true);
  ExpectSameAsSingleRank(Alternating(), "pieces, alternating, staged", nullptr, /*staged=*/true,
                         options, /*graphs=*/true);
}

// Steps planned ahead of the previous step's results (the router's
// overlap, core/scheduler.h): every decode whose input is the token its
// sequence sampled in the step just before gets kPendingToken instead; the
// leader broadcasts its tokens and the group reproduces the single rank's
// bits, one rank alone too.
TEST_P(ParallelEngineTest, DecodesOfPendingTokensGiveTheSameBits) {
  if (GetParam().ranks == 8) GTEST_SKIP() << "groups of 8 run the mode schedules only (CI time)";
  std::vector<std::vector<SequenceStep>> ahead = recording_.steps;
  int replaced = 0;
  for (size_t i = 1; i < ahead.size(); ++i) {
    for (SequenceStep& s : ahead[i]) {
      if (s.token_ids.size() != 1) continue;
      for (const EngineSample& t : recording_.outputs[i - 1]) {
        if (t.seq_id == s.seq_id && t.token_id == s.token_ids[0]) {
          s.token_ids[0] = kPendingToken;
          ++replaced;
        }
      }
    }
  }
  ASSERT_GT(replaced, 10);
  std::swap(recording_.steps, ahead);
  ExpectSameAsSingleRank(Alternating(), "pending tokens, alternating");
  ExpectSameAsSingleRank(Alternating(), "pending tokens, staged", nullptr, /*staged=*/true);
  // One rank resolves them from its own samples.
  auto engine = Engine::Create(*files_, Options());
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (size_t i = 0; i < recording_.steps.size(); ++i) {
    auto out = (*engine)->Step(recording_.steps[i]);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), recording_.outputs[i].size());
    for (size_t j = 0; j < out->size(); ++j) {
      EXPECT_EQ((*out)[j].token_id, recording_.outputs[i][j].token_id) << "step " << i;
    }
  }
  std::swap(recording_.steps, ahead);
  // A pending token the step before did not sample is refused by every rank.
  std::vector<SequenceStep> orphan = recording_.steps[0];
  orphan[0].token_ids.back() = kPendingToken;
  auto fresh = Engine::Create(*files_, Options());
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->Step(orphan).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(ParallelEngineTest, ExecutorGivesTheSameBitsThroughARecordingBackend) {
  // Steps alternate TP and SP, each rank on a backend that records every
  // operation and forwards it to the CPU backend.
  std::vector<std::vector<RecordingBackend::Call>> calls;
  ExpectSameAsSingleRank(Alternating(), "alternating, recorded", &calls);
  // Every operation went through the interface: each kind the model needs
  // was asked for, the weights were uploaded, and only the leader samples.
  const ModelConfig& c = files_->config;
  const int64_t steps = static_cast<int64_t>(recording_.steps.size()), layers = c.num_hidden_layers;
  for (int r = 0; r < GetParam().ranks; ++r) {
    auto count = [&](kernels::Op op) {
      return std::count_if(calls[r].begin(), calls[r].end(),
                           [op](const RecordingBackend::Call& call) { return call.op == op; });
    };
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    EXPECT_EQ(count(kernels::Op::kEmbedding), steps);
    EXPECT_EQ(count(kernels::Op::kAttention), steps * layers);
    EXPECT_EQ(count(kernels::Op::kWriteKv), steps * layers);
    EXPECT_EQ(count(kernels::Op::kSiluMul), steps * layers);
    EXPECT_EQ(count(kernels::Op::kRope), 2 * steps * layers);
    // Seven projections a layer, and the logits once a step.
    EXPECT_EQ(count(kernels::Op::kGemm), steps * (7 * layers + 1));
    EXPECT_EQ(count(kernels::Op::kSample), r == 0 ? steps : 0);
    if (GetParam().layout_sp() > 1) {
      EXPECT_GT(count(kernels::Op::kCopy), 0);  // SP's packing around its all-to-alls
    }
    EXPECT_GT(count(kernels::Op::kCopyFromHost), 0);
    EXPECT_EQ(count(kernels::Op::kCopyToHost), 0);
  }
}

TEST_P(ParallelEngineTest, WorkIsReallySplitOnOneCopyOfTheWeights) {
  const int p = GetParam().ranks;
  const ModelConfig& c = files_->config;
  const int64_t n = 16, d = c.hidden_size, hd = c.head_dim, layers = c.num_hidden_layers;
  SequenceStep step;
  step.seq_id = 1;
  for (int64_t t = 0; t < n; ++t) step.token_ids.push_back(static_cast<int32_t>(t * 7 % 900));
  step.block_table = {0, 1, 2, 3};
  step.sample = true;
  auto single = Engine::Create(*files_, Options());
  ASSERT_TRUE(single.ok());
  ASSERT_TRUE((*single)->Step({step}).ok());
  const uint64_t single_flops = (*single)->gemm_flops();

  EngineOptions options = Options();
  options.sp_degree = GetParam().sp;
  gloo::rendezvous::HashStore store;
  std::vector<uint64_t> tp_flops(p), sp_flops(p), tp_bytes(p), sp_bytes(p), weights(p),
      fp8_weights(p);
  std::vector<CollectiveTraffic> ulysses(p), reduced(p);
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::Connect(store, "g0", r, p, "127.0.0.1",
                                            std::chrono::milliseconds(20000));
      ASSERT_TRUE(comm.ok());
      auto engine = Engine::Create(*files_, options, comm->get());
      ASSERT_TRUE(engine.ok());
      weights[r] = (*engine)->weight_bytes();
      fp8_weights[r] = (*engine)->fp8_weight_bytes();
      uint64_t bytes = (*comm)->bytes_sent(), flops = (*engine)->gemm_flops();
      ASSERT_TRUE((*engine)->Step({step}, StepMode::kTensorParallel).ok());
      tp_bytes[r] = (*comm)->bytes_sent() - bytes;
      tp_flops[r] = (*engine)->gemm_flops() - flops;
      bytes = (*comm)->bytes_sent();
      flops = (*engine)->gemm_flops();
      ASSERT_TRUE((*engine)->Step({step}, StepMode::kSequenceParallel).ok());
      sp_bytes[r] = (*comm)->bytes_sent() - bytes;
      sp_flops[r] = (*engine)->gemm_flops() - flops;
      ulysses[r] = (*engine)->traffic(ModelExecutor::kUlyssesGroup);
      reduced[r] = (*engine)->traffic(ModelExecutor::kTpGroup);
      EXPECT_TRUE((*comm)->Barrier().ok());  // no teardown under a peer's feet
    });
  }
  for (auto& t : threads) t.join();

  // Each rank holds its TP shard of the projections and the LM head
  // (docs/architecture.md, The hybrid layout), and the embedding, norms and
  // biases whole: the whole model once in pure SP.
  const int64_t sp = GetParam().layout_sp(), tp = p / sp, vocab = c.vocab_size;
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const int64_t kv_shard = std::max<int64_t>(c.num_key_value_heads / tp, 1) * hd;
  const int64_t replicated = vocab * d + (2 * layers + 1) * d +
                             (c.attention_bias ? layers * (q + 2 * kv) : 0) +
                             (c.qk_norm ? layers * 2 * hd : 0);
  for (int r = 0; r < p; ++r) {
    const int64_t j = r / sp, panels = vocab / kernels::kPanelWidth;  // 1024: whole panels
    const int64_t lm_rows = ((j + 1) * panels / tp - j * panels / tp) * kernels::kPanelWidth;
    const int64_t sharded =
        layers * ((q * d + d * q + 3 * d * c.intermediate_size) / tp + 2 * kv_shard * d);
    EXPECT_EQ(weights[r], static_cast<uint64_t>(replicated + sharded + lm_rows * d) * sizeof(float))
        << "rank " << r;
  }
  if (sp == p) {
    EXPECT_EQ(weights[0], static_cast<uint64_t>(c.NumParameters()) * sizeof(float));
  }
  // FP8 projections as stored: each rank's codes, and the fp32 block scales
  // of the 128 x 128 tiles its rows and K columns touch (a tile cut by a
  // shard boundary counts on each rank that holds part of it).
  for (int r = 0; r < p; ++r) {
    uint64_t want = 0;
    if (c.quantization && c.quantization->block > 0) {
      const int64_t j = r / sp, inter = c.intermediate_size;
      auto tiles = [](int64_t begin, int64_t end) { return (end + 127) / 128 - begin / 128; };
      // Rows [r0, r1) and K columns [k0, k1) of one projection.
      auto part = [&](int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
        return static_cast<uint64_t>((r1 - r0) * (k1 - k0) + 4 * tiles(r0, r1) * tiles(k0, k1));
      };
      const int64_t kv0 = j * c.num_key_value_heads / tp * hd;
      const uint64_t layer = part(j * q / tp, (j + 1) * q / tp, 0, d) +
                             2 * part(kv0, kv0 + kv_shard, 0, d) +
                             part(0, d, j * q / tp, (j + 1) * q / tp) +
                             2 * part(j * inter / tp, (j + 1) * inter / tp, 0, d) +
                             part(0, d, j * inter / tp, (j + 1) * inter / tp);
      want = layer * layers;
    }
    EXPECT_EQ(fp8_weights[r], want) << "rank " << r;
  }
  // Bytes on the leader (the logits gather's root, so layers only) are the
  // per-layer traffic (docs/architecture.md, Modes and the KV layout and The
  // hybrid layout): TP 4(P-1)/P·N·D; the base mode's two all-to-alls in its
  // Ulysses group, (sp-1)·N/sp·(2·q_count + 2·kv_count)·d with this rank's
  // head counts, and two all-reduces of N/sp·D in its TP subgroup, each
  // 2(tp-1)/tp of it.
  EXPECT_EQ(tp_bytes[0], 4 * (p - 1) * n * d / p * layers * sizeof(float));
  const int64_t local = n / sp, q_count = c.num_attention_heads / p;
  const int64_t kv_count = std::max<int64_t>(c.num_key_value_heads / p, 1);
  const int64_t all_to_alls = (sp - 1) * local * (2 * q_count + 2 * kv_count) * hd;
  const int64_t all_reduces = tp > 1 ? 2 * 2 * (tp - 1) * local * d / tp : 0;
  if (sp > 1) {
    EXPECT_EQ(sp_bytes[0], (all_to_alls + all_reduces) * layers * sizeof(float));
  } else {
    EXPECT_EQ(sp_bytes[0], tp_bytes[0]);  // the base mode is TP over all ranks
  }
  // The same bytes by the group they ran in: the all-to-alls in the
  // Ulysses group, the all-reduces of both steps in TP over all ranks and
  // the TP subgroup.
  EXPECT_EQ(ulysses[0].bytes_sent, (sp > 1 ? all_to_alls * layers * sizeof(float) : 0));
  EXPECT_EQ(reduced[0].bytes_sent,
            tp_bytes[0] + (sp > 1 ? all_reduces * layers * sizeof(float) : tp_bytes[0]));
  // TP splits every GEMM over the ranks (K and V too when each rank has its
  // own kv heads); the base mode splits the tokens over the Ulysses group
  // and each projection over the TP subgroup, K and V too when each shard
  // has its own kv heads; the sampling row's logits over its TP subgroup.
  uint64_t sp_total = 0;
  for (int r = 0; r < p; ++r) sp_total += sp_flops[r];
  if (c.num_key_value_heads >= tp) {
    EXPECT_EQ(sp_total, single_flops);
    // Per rank: exactly 1/P of the layers' GEMMs (16 tokens split evenly),
    // and the sampling row's logits (the last token, slice sp - 1) on its
    // TP subgroup, each rank its shard's vocabulary panels.
    const uint64_t head = 2 * static_cast<uint64_t>(d) * c.vocab_size;
    for (int r = 0; r < p; ++r) {
      const int64_t j = r / sp, panels = c.vocab_size / kernels::kPanelWidth;
      const uint64_t rows = ((j + 1) * panels / tp - j * panels / tp) * kernels::kPanelWidth;
      const bool samples = r % sp == sp - 1;
      EXPECT_EQ(sp_flops[r], (single_flops - head) / p + (samples ? 2 * d * rows : 0))
          << "rank " << r;
    }
  } else {
    EXPECT_GT(sp_total, single_flops);
  }
  for (int r = 0; r < p; ++r) {
    if (c.num_key_value_heads >= p) {
      EXPECT_EQ(tp_flops[r] * p, single_flops) << "rank " << r;
    } else {
      EXPECT_GT(tp_flops[r] * p, single_flops) << "rank " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Groups, ParallelEngineTest,
    ::testing::Values(Case{2, 2, kLlama}, Case{4, 2, kLlama}, Case{2, 4, kLlama},
                      Case{4, 4, kLlama}, Case{2, 2, kQwen2}, Case{4, 1, kLlama},
                      // Hybrid layouts (sp, tp) and TP over all ranks as the base.
                      Case{4, 2, kLlama, 2}, Case{4, 4, kLlama, 2}, Case{4, 1, kLlama, 2},
                      Case{4, 2, kQwen2, 2}, Case{4, 2, kLlama, 1}, Case{8, 2, kLlama, 2, true},
                      Case{8, 8, kLlama, 4, true}, Case{8, 1, kQwen2, 4, true},
                      // Qwen 3, block FP8 (shards cutting blocks) and a sliding
                      // window, in TP and SP, SP x TP, and Hkv < P.
                      Case{2, 2, kQwen3}, Case{4, 2, kQwen3, 2}, Case{4, 1, kQwen3},
                      Case{2, 2, kQwen3Fp8Block}, Case{4, 2, kQwen3Fp8Block, 2},
                      Case{4, 4, kQwen3Fp8Block, 0, true}, Case{4, 2, kQwen3Fp8Block, 2, true},
                      Case{2, 2, kMistralWindow}, Case{4, 2, kMistralWindow, 2},
                      Case{4, 1, kMistralWindow}),
    [](const auto& info) {
      const Case& c = info.param;
      return "P" + std::to_string(c.ranks) + "Hkv" + std::to_string(c.kv_heads) +
             FamilyName(c.family) + (c.sp > 0 ? "Sp" + std::to_string(c.sp) : "") +
             (c.wide ? "Wide" : "");
    });

TEST(ParallelEngineErrorsTest, UnsplittableHeadsAreRefusedAtStartUp) {
  testing::TestTempDir tmp;
  MkModelOptions options;
  options.config = *PresetConfig("tiny");
  options.config.num_attention_heads = 6;
  options.config.num_key_value_heads = 3;
  options.config.hidden_size = 96;
  ASSERT_TRUE(WriteRandomModel(tmp.Sub("model"), options).ok());
  auto files = OpenModelFiles(tmp.Sub("model"));
  ASSERT_TRUE(files.ok()) << files.status();
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::Connect(store, "g", r, 2, "127.0.0.1",
                                            std::chrono::milliseconds(20000));
      ASSERT_TRUE(comm.ok());
      auto engine = Engine::Create(*files, Options(), comm->get());
      // Nobody tears down while a peer may still be finishing its connections.
      EXPECT_TRUE((*comm)->Barrier().ok());
      ASSERT_FALSE(engine.ok());
      EXPECT_NE(engine.status().message().find("3 kv heads cannot be split"), std::string::npos)
          << engine.status();
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace
}  // namespace shift
