// One rank of a P-rank group run alone (worker/emulated_communicator.h):
// its GEMM work is exactly its share of the single rank's (1/P in TP, its
// token slice in SP), its collectives count the bytes a real rank would
// receive, and the stand-in copies keep every buffer filled.
#include "worker/emulated_communicator.h"

#include <cstdlib>
#include <memory>
#include <numeric>
#include <vector>

#include "common/file_util.h"
#include "common/fingerprint.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "sim/cost_model.h"
#include "sim/hardware_profile.h"
#include "tests/testing/recording_backend.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/model_files.h"

namespace shift {
namespace {

TEST(EmulatedCommunicatorTest, CollectivesFillEveryPlaceAndCountRealBytes) {
  kernels::cpu::CpuBackend backend(1);
  EmulatedCommunicator comm(1, 4, &backend);
  std::vector<float> in = {1, 2, 3}, out(12, -1);
  ASSERT_TRUE(
      comm.AllGather(kernels::HostTensor(in.data(), 3), kernels::HostTensor(out.data(), 12)).ok());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(comm.bytes_received(), 9u * 4);  // three other ranks' 3 floats
  EXPECT_EQ(comm.bytes_sent(), 9u * 4);
  // All-to-all: we send 1, 2, 3, 4 elements to ranks 0..3 and receive 2
  // from each; our own part (2 elements, to rank 1) stands in for the rest.
  std::vector<float> send = {9, 7, 8, 0, 0, 0, 0, 0, 0, 0}, recv(8, -1);
  ASSERT_TRUE(comm.AllToAllV(kernels::HostTensor(send.data(), 10), {1, 2, 3, 4},
                             kernels::HostTensor(recv.data(), 8), {2, 2, 2, 2})
                  .ok());
  EXPECT_EQ(recv, (std::vector<float>{7, 8, 7, 8, 7, 8, 7, 8}));
  EXPECT_EQ(comm.bytes_received(), 9u * 4 + 6u * 4);
  EXPECT_EQ(comm.bytes_sent(), 9u * 4 + 8u * 4);
  EXPECT_GT(comm.seconds(), 0.0);
  EXPECT_FALSE(
      comm.AllGather(kernels::HostTensor(in.data(), 3), kernels::HostTensor(out.data(), 11)).ok());
  // A broadcast leaves the rank's own data (the root's stand-in) and counts
  // what a real rank moves: rank 1 receives 3 floats from rank 0...
  const uint64_t sent = comm.bytes_sent(), received = comm.bytes_received();
  ASSERT_TRUE(comm.Broadcast(kernels::HostTensor(in.data(), 3), 0).ok());
  EXPECT_EQ(in, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(comm.bytes_received() - received, 3u * 4);
  EXPECT_EQ(comm.bytes_sent(), sent);
  // ... and as the root sends them to the three others.
  ASSERT_TRUE(comm.Broadcast(kernels::HostTensor(in.data(), 3), 1).ok());
  EXPECT_EQ(comm.bytes_sent() - sent, 9u * 4);
  EXPECT_FALSE(comm.Broadcast(kernels::HostTensor(in.data(), 3), 4).ok());
}

class EmulatedRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    // As many KV heads as query heads: up to 4 ranks split every
    // projection evenly (with fewer KV heads than ranks, TP replicates them).
    options.config.num_key_value_heads = options.config.num_attention_heads;
    options.seed = 3;
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), options).ok());
    auto files = OpenModelFiles(tmp_.Sub("model"));
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = std::make_unique<ModelFiles>(*std::move(files));
  }

  // GEMM FLOPs of rank `rank` of `world` over a prefill of 2 sequences (64
  // and 32 tokens) then a decode of both, all in `mode`.
  uint64_t GemmFlops(int rank, int world, StepMode mode, uint64_t* bytes = nullptr) {
    auto backend = std::make_unique<kernels::cpu::CpuBackend>(1);
    EmulatedCommunicator comm(rank, world, backend.get());
    EngineOptions options;
    options.kv_cache_bytes = 4 << 20;
    options.block_size = 16;
    options.rank = rank;
    options.world_size = world;
    auto engine = Engine::Create(*files_, options, world > 1 ? &comm : nullptr, std::move(backend));
    EXPECT_TRUE(engine.ok()) << engine.status();
    std::vector<SequenceStep> prefill(2);
    for (int s = 0; s < 2; ++s) {
      prefill[s].seq_id = s + 1;
      prefill[s].token_ids.resize(s == 0 ? 64 : 32);
      std::iota(prefill[s].token_ids.begin(), prefill[s].token_ids.end(), 5 + s);
      prefill[s].block_table =
          s == 0 ? std::vector<int32_t>{0, 1, 2, 3, 4} : std::vector<int32_t>{5, 6, 7};
      prefill[s].sample = true;
    }
    auto first = (*engine)->Step(prefill, mode);
    EXPECT_TRUE(first.ok()) << first.status();
    std::vector<SequenceStep> decode = prefill;
    for (int s = 0; s < 2; ++s) {
      decode[s].start_position = static_cast<int64_t>(prefill[s].token_ids.size());
      decode[s].token_ids = {11};
    }
    auto second = (*engine)->Step(decode, mode);
    EXPECT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(first->size(), rank == 0 ? 2u : 0u);  // only the leader samples
    if (bytes != nullptr) *bytes = comm.bytes_received();
    return (*engine)->gemm_flops();
  }

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
};

TEST_F(EmulatedRankTest, EachRankDoesExactlyItsShareOfTheGemms) {
  const uint64_t tp = GemmFlops(0, 1, StepMode::kTensorParallel);
  const uint64_t sp = GemmFlops(0, 1, StepMode::kSequenceParallel);
  EXPECT_EQ(tp, sp);
  for (int world : {2, 4}) {
    uint64_t sp_total = 0;
    for (int rank = 0; rank < world; ++rank) {
      uint64_t bytes = 0;
      EXPECT_EQ(GemmFlops(rank, world, StepMode::kTensorParallel, &bytes) * world, tp)
          << world << " ranks, rank " << rank;
      EXPECT_GT(bytes, 0u);
      sp_total += GemmFlops(rank, world, StepMode::kSequenceParallel);
    }
    // SP: each rank its token slice; together, the single rank's work.
    EXPECT_EQ(sp_total, sp) << world << " ranks";
  }
}

// shift-sim prices what ranks do (docs/architecture.md, The simulator): in
// every layout of 4 and 8 ranks, rank 0's weight bytes and the bytes its
// layers' collectives send in a step, in both modes, are the cost model's.
// The model has 2 kv heads, so groups of 4 and 8 replicate them.
TEST(SimulatorMatchesRanksTest, WeightAndCollectiveBytesOfEveryLayout) {
  testing::TestTempDir tmp;
  MkModelOptions model;
  model.config = *PresetConfig("tiny");
  model.config.num_attention_heads = 8;
  model.config.hidden_size = 128;
  model.config.intermediate_size = 256;
  model.dtype = DType::kF32;
  ASSERT_TRUE(WriteRandomModel(tmp.Sub("model"), model).ok());
  auto files = OpenModelFiles(tmp.Sub("model"));
  ASSERT_TRUE(files.ok()) << files.status();
  const char* source = std::getenv("SHIFT_SOURCE_DIR");
  auto hardware = sim::LoadHardwareProfile(std::string(source ? source : ".") +
                                           "/bench/sim/hardware/h200-8x.json");
  ASSERT_TRUE(hardware.ok()) << hardware.status();
  hardware->weight_bytes = 4;  // as the CPU backend holds them
  hardware->activation_bytes = 4;
  hardware->peak_flops["f32"] = hardware->peak_flops["bf16"];  // priced, not compared
  const int64_t tokens = 32;                                   // a multiple of every sp: no padding
  for (int p : {4, 8}) {
    for (int sp = p; sp >= 1; sp /= 2) {
      SCOPED_TRACE(::testing::Message() << "P " << p << ", sp " << sp);
      auto backend = std::make_unique<kernels::cpu::CpuBackend>(1);
      EmulatedCommunicator comm(0, p, backend.get());
      EngineOptions options;
      options.kv_cache_bytes = 4 << 20;
      options.block_size = 16;
      options.sp_degree = sp;
      auto engine = Engine::Create(*files, options, &comm, std::move(backend));
      ASSERT_TRUE(engine.ok()) << engine.status();
      auto cost =
          sim::CostModel::Make(files->config, *hardware, p, sp, /*replicated_weights=*/true);
      ASSERT_TRUE(cost.ok()) << cost.status();
      EXPECT_EQ((*engine)->weight_bytes(), static_cast<uint64_t>(cost->weight_bytes_per_rank()));
      for (StepMode mode : {StepMode::kSequenceParallel, StepMode::kTensorParallel}) {
        SequenceStep step;  // a prefill chunk that samples nothing: layers only
        step.seq_id = mode == StepMode::kTensorParallel ? 1 : 2;
        step.token_ids.resize(tokens);
        std::iota(step.token_ids.begin(), step.token_ids.end(), 3);
        step.block_table = mode == StepMode::kTensorParallel ? std::vector<int32_t>{0, 1}
                                                             : std::vector<int32_t>{2, 3};
        const uint64_t before = comm.bytes_sent();
        ASSERT_TRUE((*engine)->Step({step}, mode).ok());
        const sim::Features f = cost->FeaturesOf({sim::Chunk{0, tokens, false}}, mode);
        EXPECT_EQ(comm.bytes_sent() - before,
                  static_cast<uint64_t>(f[sim::kAllReduceBytes] + f[sim::kAllToAllBytes]))
            << StepModeName(mode);
      }
    }
  }
}

// Each rank digests exactly what it loads (docs/architecture.md, The
// weights digest): in an FP8 model split over two TP ranks, a rank reads
// only its rows of a column-parallel projection's codes, so neither rank
// alone covers the model; together they give the digest of one whole read
// (shift-inspect's), with per-row and block scales. Pieces of 256 bytes
// make the rows' ranges visible in a tiny model.
TEST(WeightsDigestOfRanksTest, EachRankDigestsItsShardAndTheGroupCoversTheModel) {
  constexpr uint64_t kPiece = 256;
  for (int64_t block : {int64_t{0}, int64_t{128}}) {
    SCOPED_TRACE(::testing::Message() << "FP8 block " << block);
    testing::TestTempDir tmp;
    MkModelOptions model;
    model.config = *PresetConfig("tiny");
    model.config.num_attention_heads = 8;
    model.config.num_key_value_heads = 4;
    model.config.intermediate_size = 256;
    model.dtype = DType::kF8E4M3;
    model.fp8_block = block;
    ASSERT_TRUE(WriteRandomModel(tmp.Sub("model"), model).ok());
    auto config_json = ReadFileToString(tmp.Sub("model") + "/config.json");
    ASSERT_TRUE(config_json.ok());
    std::vector<WeightsReport> reports;
    for (int rank : {0, 1}) {
      auto files = OpenModelFiles(tmp.Sub("model"));
      ASSERT_TRUE(files.ok()) << files.status();
      WeightsDigester digester(ConfigDigest(*config_json), *files->checkpoint, kPiece, 1);
      files->checkpoint->set_observer(&digester);
      auto backend = std::make_unique<kernels::cpu::CpuBackend>(1);
      EmulatedCommunicator comm(rank, 2, backend.get());
      EngineOptions options;
      options.kv_cache_bytes = 1 << 20;
      options.block_size = 16;
      options.sp_degree = 1;  // TP over both ranks: each holds half the rows
      auto engine = Engine::Create(*files, options, &comm, std::move(backend));
      ASSERT_TRUE(engine.ok()) << engine.status();
      reports.push_back(digester.Report());
    }
    const std::string up = "model.layers.0.mlp.up_proj.weight";
    const TensorPieces& mine = reports[0].tensors.at(up);
    const uint64_t all = (mine.nbytes + kPiece - 1) / kPiece;
    EXPECT_LT(mine.pieces.size(), all);      // its rows only...
    EXPECT_GE(mine.pieces.size(), all / 2);  // ...all of them
    EXPECT_EQ(mine.pieces.begin()->first, 0u);
    EXPECT_EQ(reports[1].tensors.at(up).pieces.rbegin()->first, all - 1);
    EXPECT_EQ(WeightsDifference(reports[0], reports[1], "rank 1"), "");
    EXPECT_FALSE(CombinedWeightsDigest({&reports[0]}).ok());
    auto group = CombinedWeightsDigest({&reports[0], &reports[1]});
    auto whole = ModelWeightsDigest(tmp.Sub("model"), 1, kPiece);
    ASSERT_TRUE(group.ok()) << group.status();
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_EQ(*group, *whole);
  }
}

// A rank whose shard and KV cache do not fit its device's free memory is
// refused at start, saying what it needs and which --sp_degree fits; the
// layout it names does fit.
TEST(ShardMemoryTest, ARankThatDoesNotFitNamesTheLayoutThatWould) {
  testing::TestTempDir tmp;
  MkModelOptions model;
  model.config = *PresetConfig("tiny");
  ASSERT_TRUE(WriteRandomModel(tmp.Sub("model"), model).ok());
  auto files = OpenModelFiles(tmp.Sub("model"));
  ASSERT_TRUE(files.ok()) << files.status();
  EngineOptions options;
  options.kv_cache_bytes = 1 << 20;
  options.block_size = 16;
  auto create = [&](int sp, int64_t free_memory) {
    auto backend = std::make_unique<testing::RecordingBackend>();
    backend->set_free_memory(free_memory);
    EmulatedCommunicator comm(0, 4, backend.get());
    EngineOptions o = options;
    o.sp_degree = sp;
    auto engine = Engine::Create(*files, o, &comm, std::move(backend));
    return engine.ok() ? absl::StatusOr<uint64_t>((*engine)->weight_bytes())
                       : absl::StatusOr<uint64_t>(engine.status());
  };
  // What a (2, 2) rank holds (the recording backend's values are fp32).
  auto half = create(2, -1);
  ASSERT_TRUE(half.ok()) << half.status();
  const int64_t room = static_cast<int64_t>(*half) + options.kv_cache_bytes;
  const absl::StatusOr<uint64_t> whole = create(4, room);
  ASSERT_FALSE(whole.ok());
  EXPECT_EQ(whole.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(whole.status().message().find("--sp_degree=2 fits"), std::string_view::npos)
      << whole.status();
  EXPECT_NE(whole.status().message().find("(sp 4, tp 1)"), std::string_view::npos);
  EXPECT_TRUE(create(2, room).ok());
  const absl::StatusOr<uint64_t> none = create(1, options.kv_cache_bytes);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no layout of 4 ranks fits"), std::string_view::npos)
      << none.status();
}

}  // namespace
}  // namespace shift
