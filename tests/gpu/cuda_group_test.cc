// A group of ranks sharing one GPU (threads of this process, each with its
// own CUDA backend, collectives host-staged through Gloo as shift-worker
// chooses for ranks on one device) replays a recorded run in TP, in SP and
// switching mode every step, teacher-forced: the leader's logits must
// follow a single CUDA rank's (top-1 agreement on decisive positions at
// least 99%, logit NMSE under 1e-3; bf16 on both sides, so bits may differ
// where TP joins partial sums). Kv-head replication (fewer kv heads than
// ranks) included. On the CPU the same replays are bit-exact
// (tests/integration/parallel_engine_test.cc). Skips, saying why, without a
// GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <thread>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "kernels/backends.h"
#include "tests/testing/logit_agreement.h"
#include "tests/testing/recorded_run.h"
#include "tests/testing/temp_dir.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/gloo_communicator.h"
#include "worker/staged_communicator.h"

namespace shift {
namespace {

constexpr double kMaxNmse = 1e-3;
constexpr double kMinTop1 = 0.99;

struct Case {
  int ranks;
  int64_t kv_heads;
  int sp = 0;  // the base mode's Ulysses degree: 0 is pure SP, 2 of 4 the hybrid (2, 2)
};

using Logits = std::vector<std::vector<float>>;  // every sampled row, in order

class CudaGroupTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::CudaDeviceCount(&why) == 0) GTEST_SKIP() << "no GPU present: " << why;
    MkModelOptions options;
    options.config = *PresetConfig("tiny");
    options.config.num_key_value_heads = GetParam().kv_heads;
    options.seed = 29;
    ASSERT_TRUE(WriteRandomModel(tmp_.Sub("model"), options).ok());
    auto files = OpenModelFiles(tmp_.Sub("model"));
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = std::make_unique<ModelFiles>(*std::move(files));
    recording_ = testing::RecordSingleRank(*files_);
  }

  static EngineOptions Cuda() {
    EngineOptions options = testing::Options();
    options.device = kernels::Device::kCuda;
    options.cuda_device = 0;
    return options;
  }

  static void Append(const std::vector<EngineSample>& out, Logits* logits) {
    for (const EngineSample& s : out) logits->push_back(s.logits);
  }

  Logits SingleRank() {
    Logits logits;
    auto engine = Engine::Create(*files_, Cuda());
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return logits;
    for (const auto& step : recording_.steps) {
      auto out = (*engine)->Step(step);
      EXPECT_TRUE(out.ok()) << out.status();
      if (out.ok()) Append(*out, &logits);
    }
    return logits;
  }

  Logits Group(const std::vector<StepMode>& modes) {
    const int p = GetParam().ranks;
    gloo::rendezvous::HashStore store;
    Logits leader;
    std::vector<std::thread> threads;
    for (int r = 0; r < p; ++r) {
      threads.emplace_back([&, r] {
        auto backend = kernels::CreateBackend(kernels::Device::kCuda, kernels::BackendOptions());
        ASSERT_TRUE(backend.ok()) << backend.status();
        kernels::Backend* device = backend->get();
        auto gloo = GlooCommunicator::Connect(store, "g0", r, p, "127.0.0.1",
                                              std::chrono::milliseconds(20000));
        ASSERT_TRUE(gloo.ok()) << gloo.status();
        auto comm = std::make_unique<StagedCommunicator>(*std::move(gloo), device);
        EngineOptions options = Cuda();
        options.sp_degree = GetParam().sp;
        auto engine = Engine::Create(*files_, options, comm.get(), *std::move(backend));
        ASSERT_TRUE(engine.ok()) << engine.status();
        for (size_t i = 0; i < recording_.steps.size(); ++i) {
          auto out = (*engine)->Step(recording_.steps[i], modes[i]);
          ASSERT_TRUE(out.ok()) << out.status();
          if (r == 0) Append(*out, &leader);
        }
        EXPECT_TRUE(comm->Barrier().ok());  // no teardown under a peer's feet
      });
    }
    for (auto& t : threads) t.join();
    return leader;
  }

  void ExpectClose(const Logits& want, const Logits& got, const std::string& name) {
    ASSERT_EQ(want.size(), got.size()) << name;
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(want[i].size(), got[i].size()) << name;
    const testing::LogitAgreement a = testing::CompareLogits(want, got);
    std::printf(
        "%d ranks (sp %d), %lld kv heads, %s: top-1 %.4f over %d decisive of %zu rows, "
        "NMSE %.3g\n",
        GetParam().ranks, GetParam().sp > 0 ? GetParam().sp : GetParam().ranks,
        static_cast<long long>(GetParam().kv_heads), name.c_str(), a.decisive_top1, a.decisive,
        a.rows, a.nmse);
    EXPECT_GE(a.decisive_top1, kMinTop1) << name;
    EXPECT_LT(a.nmse, kMaxNmse) << name;
  }

  testing::TestTempDir tmp_;
  std::unique_ptr<ModelFiles> files_;
  testing::Recording recording_;
};

TEST_P(CudaGroupTest, TpSpAndSwitchingFollowOneRank) {
  const Logits one = SingleRank();
  ASSERT_FALSE(one.empty());
  const size_t steps = recording_.steps.size();
  std::vector<StepMode> alternating;
  for (size_t i = 0; i < steps; ++i) {
    alternating.push_back(i % 2 ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
  }
  ExpectClose(one, Group(std::vector<StepMode>(steps, StepMode::kTensorParallel)), "all TP");
  ExpectClose(one, Group(std::vector<StepMode>(steps, StepMode::kSequenceParallel)), "all SP");
  ExpectClose(one, Group(alternating), "switching every step");
}

INSTANTIATE_TEST_SUITE_P(Groups, CudaGroupTest,
                         ::testing::Values(Case{2, 2}, Case{2, 1}, Case{4, 2}, Case{4, 2, 2}),
                         [](const auto& info) {
                           return "P" + std::to_string(info.param.ranks) + "_kv" +
                                  std::to_string(info.param.kv_heads) +
                                  (info.param.sp > 0 ? "_sp" + std::to_string(info.param.sp) : "");
                         });

}  // namespace
}  // namespace shift
