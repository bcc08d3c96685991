// shift-sim's library: hardware profiles (every number with a source), the
// cost model (its linear form is exactly the price when compute and memory
// add; the shapes behave as the hardware says), the non-negative fit, and
// the simulator's timing of requests on the virtual clock (TTFT, TPOT,
// data-parallel placement, closed loops, a full queue).
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/group_choice.h"
#include "gtest/gtest.h"
#include "sim/cost_model.h"
#include "sim/fit.h"
#include "sim/hardware_profile.h"
#include "sim/simulator.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"

namespace shift::sim {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("SHIFT_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

HardwareProfile H200() {
  auto p = LoadHardwareProfile(SourceDir() + "/bench/sim/hardware/h200-8x.json");
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : HardwareProfile();
}

// Llama-3-70B's shapes (shift-mkmodel's preset), FP8 weights.
ModelConfig Llama70b() {
  absl::StatusOr<ModelConfig> c = PresetConfig("llama3-70b");
  EXPECT_TRUE(c.ok()) << c.status();
  ModelConfig config = c.ok() ? *c : ModelConfig();
  Fp8Quantization per_channel;  // compressed-tensors, one scale per output channel
  per_channel.ignore = {"lm_head"};
  config.quantization = per_channel;
  return config;
}

TEST(HardwareProfileTest, CommittedProfilesLoadWithASourceForEveryNumber) {
  for (const char* name :
       {"h100-8x.json", "h200-8x.json", "h200-8x-fitted.json", "cpu-local.json"}) {
    auto p = LoadHardwareProfile(SourceDir() + "/bench/sim/hardware/" + name);
    ASSERT_TRUE(p.ok()) << name << ": " << p.status();
    EXPECT_FALSE(p->name.empty());
  }
}

TEST(HardwareProfileTest, ANumberWithoutASourceIsRefused) {
  nlohmann::json j = HardwareProfileJson(H200());
  j["sources"].erase("memory_bandwidth");
  auto p = ParseHardwareProfile(j, "edited.json");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("memory_bandwidth has no source"), std::string::npos)
      << p.status();
  j = HardwareProfileJson(H200());
  j["gemm_efficiency"]["fp8"] = 1.5;
  EXPECT_FALSE(ParseHardwareProfile(j, "edited.json").ok());
  j = HardwareProfileJson(H200());
  j.erase("all_reduce");
  EXPECT_FALSE(ParseHardwareProfile(j, "edited.json").ok());
  // A misspelt optional number is refused, not ignored.
  j = HardwareProfileJson(H200());
  j["loop_overhead"] = 0.001;
  p = ParseHardwareProfile(j, "edited.json");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("unknown field \"loop_overhead\""), std::string::npos);
  j = HardwareProfileJson(H200());
  j["all_reduce"]["latency"] = 1e-5;
  EXPECT_FALSE(ParseHardwareProfile(j, "edited.json").ok());
}

TEST(HardwareProfileTest, SetReplacesANumberAndItsSource) {
  HardwareProfile p = H200();
  ASSERT_TRUE(SetProfileValue(&p, "all_reduce.latency_s", 2e-5, "test").ok());
  EXPECT_EQ(p.all_reduce.latency_s, 2e-5);
  EXPECT_EQ(p.sources["all_reduce.latency_s"], "test");
  EXPECT_FALSE(SetProfileValue(&p, "no.such.number", 1, "test").ok());
  EXPECT_FALSE(SetProfileValue(&p, "gemm_efficiency.fp8", 2, "test").ok());
}

TEST(CostModelTest, WithoutOverlapThePriceIsTheFeaturesTimesTheCoefficients) {
  HardwareProfile hw = H200();
  hw.overlap = false;
  hw.gather = hw.all_to_all;  // the features count gathers with all-to-alls
  hw.layer_overhead_s = 1e-6;
  auto cost = CostModel::Make(Llama70b(), hw, 8, 8, true);
  ASSERT_TRUE(cost.ok()) << cost.status();
  const std::vector<std::vector<Chunk>> steps = {
      {{0, 4000, true}},
      {{100, 1, true}, {2000, 1, true}, {0, 300, false}},
      {{4095, 1, true}},
  };
  for (const auto& chunks : steps) {
    for (StepMode mode : {StepMode::kTensorParallel, StepMode::kSequenceParallel}) {
      const Features f = cost->FeaturesOf(chunks, mode);
      const Features t = cost->Coefficients();
      double linear = 0;
      for (int k = 0; k < kNumFeatures; ++k) linear += f[k] * t[k];
      EXPECT_NEAR(cost->Price(chunks, mode).total_s(), linear, 1e-12 + 1e-9 * linear);
    }
  }
}

// A sliding window bounds the positions each token attends: Mistral-7B's
// 4096 over a 6000-token prefill and a decode at 9000, against the same
// model without a window, per layer Σ min(p + 1, window).
TEST(CostModelTest, ASlidingWindowBoundsTheAttendedPositions) {
  ModelConfig windowed = *PresetConfig("mistral-7b");
  ModelConfig full = windowed;
  full.sliding_window = 0;
  auto with = CostModel::Make(windowed, H200(), 8, 8, true);
  auto without = CostModel::Make(full, H200(), 8, 8, true);
  ASSERT_TRUE(with.ok() && without.ok());
  auto flops = [](const CostModel& cost, std::vector<Chunk> chunks) {
    return cost.FeaturesOf(chunks, StepMode::kTensorParallel)[kAttentionFlops];
  };
  const double prefill_full = 6000.0 * 6001 / 2, prefill_window = 4096.0 * 4097 / 2 + 1904.0 * 4096;
  EXPECT_DOUBLE_EQ(flops(*with, {{0, 6000, true}}) / flops(*without, {{0, 6000, true}}),
                   prefill_window / prefill_full);
  EXPECT_DOUBLE_EQ(flops(*with, {{9000, 1, true}}) / flops(*without, {{9000, 1, true}}),
                   4096.0 / 9001);
  // Inside the window nothing changes.
  EXPECT_EQ(flops(*with, {{100, 200, true}}), flops(*without, {{100, 200, true}}));
  // Qwen's windows only from max_window_layers on: half the layers here.
  ModelConfig half = windowed;
  half.architecture = "Qwen2ForCausalLM";
  half.max_window_layers = 16;
  auto halved = CostModel::Make(half, H200(), 8, 8, true);
  ASSERT_TRUE(halved.ok());
  EXPECT_DOUBLE_EQ(flops(*halved, {{9000, 1, true}}) / flops(*without, {{9000, 1, true}}),
                   (4096.0 / 9001 + 1) / 2);
}

TEST(CostModelTest, DecodeFavoursTpAndLongPrefillFavoursSp) {
  auto cost = CostModel::Make(Llama70b(), H200(), 8, 8, true);
  ASSERT_TRUE(cost.ok()) << cost.status();
  const std::vector<Chunk> decode = {{4000, 1, true}};
  const std::vector<Chunk> prefill = {{0, 4000, true}};
  const StepCost tp_decode = cost->Price(decode, StepMode::kTensorParallel);
  const StepCost sp_decode = cost->Price(decode, StepMode::kSequenceParallel);
  // SP reads all the weights on every rank: about P times the bytes.
  EXPECT_GT(sp_decode.compute_s, 5 * tp_decode.compute_s);
  const StepCost tp_prefill = cost->Price(prefill, StepMode::kTensorParallel);
  const StepCost sp_prefill = cost->Price(prefill, StepMode::kSequenceParallel);
  EXPECT_LT(sp_prefill.total_s(), tp_prefill.total_s());
  // TP all-reduces N·D per layer twice; SP moves about P times less.
  EXPECT_GT(tp_prefill.collective_bytes, 4 * sp_prefill.collective_bytes);
  // A hybrid (2, 4) base sits between them on a decode.
  auto hybrid = CostModel::Make(Llama70b(), H200(), 8, 2, true);
  ASSERT_TRUE(hybrid.ok());
  const double h = hybrid->Price(decode, StepMode::kSequenceParallel).total_s();
  EXPECT_GT(h, tp_decode.total_s());
  EXPECT_LT(h, sp_decode.total_s());
}

TEST(CostModelTest, MemoryLeftAfterTheWeightsBoundsTheKvCache) {
  auto replicated = CostModel::Make(Llama70b(), H200(), 8, 8, true);
  auto sharded = CostModel::Make(Llama70b(), H200(), 8, 8, false);
  ASSERT_TRUE(replicated.ok() && sharded.ok());
  // FP8 layers (~68 GB) plus bf16 embeddings and head (~4 GB).
  EXPECT_NEAR(replicated->weight_bytes_per_rank(), 72e9, 2e9);
  EXPECT_NEAR(sharded->weight_bytes_per_rank(), 9e9, 0.5e9);
  auto r = replicated->NumBlocks(16);
  auto s = sharded->NumBlocks(16);
  ASSERT_TRUE(r.ok() && s.ok());
  EXPECT_GT(*s, *r);
  // A 70B model in bf16 on one H100 does not fit.
  HardwareProfile h100 = H200();
  h100.memory_bytes = 80e9;
  ModelConfig bf16 = Llama70b();
  bf16.quantization.reset();
  auto one = CostModel::Make(bf16, h100, 1, 1, true);
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one->NumBlocks(16).ok());
  EXPECT_FALSE(CostModel::Make(bf16, h100, 16, 16, true).ok());  // more ranks than devices
  EXPECT_FALSE(CostModel::Make(bf16, h100, 8, 3, true).ok());    // sp must divide P
}

// A compute profile (shift-generate --compute_profile lines) replaces the
// model's compute by the law fitted to it; collectives stay priced.
TEST(CostModelTest, AComputeProfileGivesTheComputePart) {
  testing::TestTempDir tmp;
  const std::string path = (tmp.path() / "profile.jsonl").string();
  {
    std::ofstream out(path);
    for (int tokens : {1, 8, 64, 256, 1024, 4096}) {
      for (const char* mode : {"tp", "sp"}) {
        const double attention = tokens * (tokens + 1.0) / 2, sequences = 1 + tokens % 3;
        const double seconds = std::string(mode) == "tp"
                                   ? 1e-3 + 2e-6 * tokens + 1e-9 * attention + 1e-5 * sequences
                                   : 4e-3 + 1e-6 * tokens;
        out << "{\"world_size\":8,\"rank\":0,\"mode\":\"" << mode << "\",\"tokens\":" << tokens
            << ",\"sequences\":" << sequences << ",\"decodes\":0,\"max_context\":" << tokens
            << ",\"attention\":" << attention << ",\"step_s\":1,\"collective_s\":0,"
            << "\"collective_bytes\":0,\"compute_s\":" << seconds << "}\n";
      }
    }
  }
  auto law = LoadComputeProfile(path);
  ASSERT_TRUE(law.ok()) << law.status();
  EXPECT_EQ(law->world_size, 8);
  EXPECT_EQ(law->steps, 12);
  EXPECT_NEAR(law->Seconds(StepMode::kTensorParallel, 100, 1e4, 2), 1e-3 + 2e-4 + 1e-5 + 2e-5,
              1e-7);
  EXPECT_NEAR(law->Seconds(StepMode::kSequenceParallel, 100, 1e4, 1), 4e-3 + 1e-4, 1e-7);
  auto cost = CostModel::Make(Llama70b(), H200(), 8, 8, true);
  ASSERT_TRUE(cost.ok());
  cost->set_compute_law(*law);
  // 100 new tokens after 0: attention = 100·101/2 positions.
  const std::vector<Chunk> prefill = {{0, 100, true}};
  const StepCost c = cost->Price(prefill, StepMode::kTensorParallel);
  EXPECT_NEAR(c.compute_s, 1e-3 + 2e-6 * 100 + 1e-9 * 5050 + 1e-5, 1e-7);
  EXPECT_GT(c.collective_s, 0);
  // Too few steps of a mode, or mixed world sizes, are refused.
  {
    std::ofstream(path) << "{\"world_size\":8,\"mode\":\"tp\",\"tokens\":1,\"sequences\":1,"
                           "\"attention\":1,\"compute_s\":0.001}\n";
  }
  EXPECT_FALSE(LoadComputeProfile(path).ok());
}

TEST(FitTest, RecoversNonNegativeCoefficients) {
  std::vector<std::vector<double>> rows;
  std::vector<double> y;
  for (int i = 1; i <= 40; ++i) {
    const double a = i, b = (i * 7) % 11 + 1, c = (i * 3) % 5;
    rows.push_back({1, a, b, c});
    y.push_back(0.5 + 2 * a + 0 * b + 3 * c);
  }
  const std::vector<double> x = FitNonNegative(rows, y, /*relative=*/true);
  ASSERT_EQ(x.size(), 4u);
  EXPECT_NEAR(x[0], 0.5, 1e-6);
  EXPECT_NEAR(x[1], 2, 1e-6);
  EXPECT_NEAR(x[2], 0, 1e-6);
  EXPECT_NEAR(x[3], 3, 1e-6);
  // A target that wants a negative coefficient gets 0 there instead.
  for (size_t i = 0; i < y.size(); ++i) y[i] = 1 + rows[i][1] - 0.5 * rows[i][2];
  for (double v : FitNonNegative(rows, y, false)) EXPECT_GE(v, 0);
}

workload::Request Req(double at, int64_t prompt, uint32_t out) {
  workload::Request r;
  r.at = at;
  for (int64_t i = 0; i < prompt; ++i) r.prompt.push_back(static_cast<int32_t>(100 + i % 50));
  r.max_tokens = out;
  return r;
}

SimOptions Options() {
  SimOptions o;
  o.scheduler.num_blocks = 1000;
  o.scheduler.max_num_batched_tokens = 256;
  o.scheduler.enable_prefix_caching = false;
  o.policy = "tp";
  return o;
}

StepTimer Fixed(double s) {
  return [s](const SchedulerOutput&, StepMode) { return s; };
}

TEST(SimulatorTest, OneRequestTakesOneStepPerToken) {
  auto r = Simulate(Options(), {Req(1.0, 100, 5)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->outcomes.size(), 1u);
  const workload::Outcome& o = r->outcomes[0];
  EXPECT_EQ(o.code, "OK");
  EXPECT_DOUBLE_EQ(o.start, 1.0);
  EXPECT_NEAR(o.ttft, 0.01, 1e-9);  // one prefill step, its token at its end
  EXPECT_NEAR(o.e2e, 0.05, 1e-9);   // then four decode steps
  EXPECT_EQ(o.output_tokens, 5);
  EXPECT_EQ(r->steps, 5);
  // A prompt over the step budget is chunked: 300 tokens in 256 + 44.
  r = Simulate(Options(), {Req(0, 300, 2)}, Fixed(0.01));
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->outcomes[0].ttft, 0.02, 1e-9);
}

TEST(SimulatorTest, PricesEachStepByItsShape) {
  // 1 ms per token: the prefill of 100 costs 100 ms, decodes 1 ms each
  // until the second request's prefill joins a step.
  auto per_token = [](const SchedulerOutput& s, StepMode) { return 1e-3 * s.num_tokens; };
  auto r = Simulate(Options(), {Req(0, 100, 3), Req(0.1005, 50, 2)}, per_token);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->outcomes[0].ttft, 0.1, 1e-9);
  // Request 2 arrives during step 2 (0.100..0.101) and joins step 3.
  EXPECT_NEAR(r->outcomes[1].ttft, 0.101 + 0.051 - 0.1005, 1e-9);
  EXPECT_NEAR(r->outcomes[0].e2e, 0.101 + 0.051, 1e-9);
}

TEST(SimulatorTest, ASwitchOfModeCostsTheProfilesSwitchOverhead) {
  SimOptions o = Options();
  o.policy = "threshold";
  o.threshold = 16;
  o.switch_overhead_s = 0.005;
  // A 64-token prefill in SP, then decodes in TP: the first decode pays.
  auto r = Simulate(o, {Req(0, 64, 4)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sp_steps, 1);
  EXPECT_EQ(r->switches, 1);
  EXPECT_NEAR(r->outcomes[0].ttft, 0.01, 1e-9);
  EXPECT_NEAR(r->outcomes[0].e2e, 0.045, 1e-9);
}

TEST(SimulatorTest, PlanningAheadHidesTheLoopsGap) {
  SimOptions o = Options();
  o.loop_overhead_s = 0.002;
  auto r = Simulate(o, {Req(0, 100, 5)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->outcomes[0].ttft, 0.012, 1e-9);
  EXPECT_NEAR(r->outcomes[0].e2e, 0.060, 1e-9);  // every step pays the gap
  // Each step after the first is planned while the one before runs and
  // starts when it ends; no step more (none past max_tokens).
  o.plan_ahead = true;
  r = Simulate(o, {Req(0, 100, 5)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->outcomes[0].ttft, 0.012, 1e-9);
  EXPECT_NEAR(r->outcomes[0].e2e, 0.052, 1e-9);
  EXPECT_EQ(r->outcomes[0].output_tokens, 5);
  EXPECT_EQ(r->steps, 5);
}

TEST(SimulatorTest, PlanningAheadQueuesArrivalsBeforeTheStepPlannedNext) {
  SimOptions o = Options();
  o.plan_ahead = true;
  std::vector<StepArrival> arrivals = {{1}, {3}};
  auto r = Simulate(o, {Req(0, 16, 4), Req(0, 16, 2)}, Fixed(0.01), &arrivals);
  ASSERT_TRUE(r.ok()) << r.status();
  // Step 3 is planned while step 2 runs, when step 1 ends (10 ms): the
  // second request is queued then, and gets its first token when step 3
  // ends.
  EXPECT_NEAR(r->outcomes[1].start, 0.01, 1e-9);
  EXPECT_NEAR(r->outcomes[1].ttft, 0.02, 1e-9);
  EXPECT_EQ(r->steps, 4);
}

// The router's placement rule, which the simulator shares.
TEST(GroupChoiceTest, LeastOutstandingReadyGroupFirstOfEquals) {
  EXPECT_EQ(PickLeastLoaded({}), -1);
  EXPECT_EQ(PickLeastLoaded({{false, 0}, {false, 5}}), -1);
  EXPECT_EQ(PickLeastLoaded({{true, 7}, {true, 3}, {true, 3}}), 1);
  EXPECT_EQ(PickLeastLoaded({{false, 0}, {true, 9}, {true, 10}}), 1);
  Request r;
  r.prompt = {1, 2, 3};
  r.params.max_tokens = 5;
  EXPECT_EQ(RequestWork(r), 8);
}

TEST(SimulatorTest, DataParallelGroupsShareTheLoadAndRunAtOnce) {
  SimOptions o = Options();
  o.num_groups = 2;
  auto r = Simulate(o, {Req(0, 64, 4), Req(0, 64, 4)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  // Each group has one request: both finish after 4 steps of 10 ms.
  for (const auto& out : r->outcomes) EXPECT_NEAR(out.e2e, 0.04, 1e-9);
  EXPECT_EQ(r->steps, 8);
  EXPECT_NEAR(r->end_s, 0.04, 1e-9);
}

TEST(SimulatorTest, ClosedLoopSendsTheNextWhenOneEnds) {
  SimOptions o = Options();
  o.concurrency = 1;
  o.duration_s = 1e9;
  o.closed_loop_prompt = [](uint64_t) { return std::vector<int32_t>(32, 7); };
  std::vector<workload::Request> requests(3, workload::Request{0, {}, 2});
  auto r = Simulate(o, requests, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->outcomes.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(r->outcomes[i].start, 0.02 * i, 1e-9);
    EXPECT_NEAR(r->outcomes[i].e2e, 0.02, 1e-9);
  }
}

TEST(SimulatorTest, AFullQueueRefusesAsTheRouterDoes) {
  SimOptions o = Options();
  o.max_queued_requests = 1;
  o.scheduler.max_num_seqs = 1;
  auto r = Simulate(o, {Req(0, 16, 4), Req(0, 16, 4), Req(0, 16, 4)}, Fixed(0.01));
  ASSERT_TRUE(r.ok()) << r.status();
  // All arrive at once: the first waits, so the queue of one is full.
  int refused = 0;
  for (const auto& out : r->outcomes) refused += out.code == "RESOURCE_EXHAUSTED";
  EXPECT_EQ(refused, 2);
}

TEST(SimulatorTest, ArrivalsByStepQueueBeforeTheirStep) {
  std::vector<StepArrival> arrivals = {{1}, {3}};
  auto r = Simulate(Options(), {Req(0, 16, 4), Req(0, 16, 2)}, Fixed(0.01), &arrivals);
  ASSERT_TRUE(r.ok()) << r.status();
  // The second is queued before step 3 (at 20 ms) and first computed there.
  EXPECT_NEAR(r->outcomes[1].start, 0.02, 1e-9);
  EXPECT_NEAR(r->outcomes[1].ttft, 0.01, 1e-9);
  EXPECT_EQ(r->steps, 4);
}

TEST(SimulatorTest, IdlingSkipsAheadToEveryArrivalOfTheSameStep) {
  // Nothing runs between step 1's request and step 50's: both of step 50's
  // are queued together when the first has finished, and share their steps.
  std::vector<StepArrival> arrivals = {{1}, {50}, {50}};
  auto r =
      Simulate(Options(), {Req(0, 16, 2), Req(0, 16, 3), Req(0, 16, 3)}, Fixed(0.01), &arrivals);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->outcomes[1].start, r->outcomes[2].start, 1e-9);
  EXPECT_EQ(r->steps, 2 + 3);
}

}  // namespace
}  // namespace shift::sim
