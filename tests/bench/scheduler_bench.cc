// Router scheduler overhead: wall time of one Schedule() + UpdateFromOutput()
// cycle with 1, 64 and 256 sequences decoding in steady state (ignore_eos,
// long max_tokens, a block pool large enough never to preempt; a finished
// request is replaced outside the timed region). BM_RouterStep adds what
// the router does besides: the shift decision, building the StepPlan and
// serializing it once per rank (P = 2).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/scheduler.h"
#include "core/shift_policy.h"
#include "router/step_plan.h"

namespace shift {
namespace {

constexpr int64_t kPromptLen = 16;
constexpr int64_t kBlockSize = 16;
constexpr uint32_t kMaxTokens = 4096;

class DecodeLoop {
 public:
  explicit DecodeLoop(int64_t num_seqs) : num_seqs_(num_seqs), sched_(Config(num_seqs), &clock_) {
    for (int64_t i = 0; i < num_seqs; ++i) {
      // Staggered lengths so requests do not all end on the same step.
      Add(kMaxTokens - static_cast<uint32_t>((i * 37) % 1024));
    }
    Cycle();  // every prompt's prefill
  }

  // One step: schedule, answer every sampled sequence, apply. Returns
  // whether some request finished.
  bool Cycle(bool plan = false) {
    const SchedulerOutput out = sched_.Schedule();
    if (plan) {
      const ShiftDecision decision =
          policy_->Decide({out.num_tokens, static_cast<int64_t>(out.sequences.size()),
                           out.num_decodes, out.max_context});
      const v1::internal::StepPlan step = BuildStepPlan(out, decision.mode, out.released_seq_ids);
      for (int rank = 0; rank < 2; ++rank) {
        std::string wire = step.SerializeAsString();
        benchmark::DoNotOptimize(wire.data());
      }
    }
    sampled_.clear();
    for (const ScheduledSequence& s : out.sequences) {
      if (s.sample) sampled_.push_back(SampledToken{s.seq_id, 5, -0.1f, {}});
    }
    const std::vector<RequestUpdate> updates = sched_.UpdateFromOutput(out, sampled_);
    benchmark::DoNotOptimize(updates.data());
    bool finished = false;
    for (const RequestUpdate& u : updates) finished |= u.finish != FinishReason::kNone;
    return finished;
  }

  // Tops the batch back up to num_seqs decoding sequences.
  void Refill() {
    while (sched_.num_running() + sched_.num_waiting() < num_seqs_) Add(kMaxTokens);
    while (sched_.num_waiting() > 0) Cycle();
  }

  int64_t num_running() const { return sched_.num_running(); }

 private:
  static SchedulerConfig Config(int64_t num_seqs) {
    SchedulerConfig c;
    c.max_num_batched_tokens = 1 << 20;
    c.max_num_seqs = num_seqs;
    c.max_model_len = kPromptLen + kMaxTokens;
    c.block_size = kBlockSize;
    c.num_blocks = (num_seqs + 1) * ((kPromptLen + kMaxTokens) / kBlockSize + 1);
    return c;
  }

  void Add(uint32_t max_tokens) {
    auto r = std::make_unique<Request>();
    r->id = next_id_++;
    for (int64_t i = 0; i < kPromptLen; ++i) r->prompt.push_back(static_cast<int32_t>(i + 10));
    r->params.max_tokens = max_tokens;
    r->params.ignore_eos = true;
    r->params.eos_token_ids = {2};
    r->arrival = clock_.Now();
    const absl::Status s = sched_.AddRequest(std::move(r));
    if (!s.ok()) {
      std::fprintf(stderr, "AddRequest: %s\n", s.ToString().c_str());
      std::abort();
    }
  }

  int64_t num_seqs_;
  std::unique_ptr<ShiftPolicy> policy_ = MakeThresholdPolicy(256);
  ManualClock clock_;
  Scheduler sched_;
  std::vector<SampledToken> sampled_;
  uint64_t next_id_ = 1;
};

void Run(benchmark::State& state, bool plan) {
  const int64_t num_seqs = state.range(0);
  DecodeLoop loop(num_seqs);
  if (loop.num_running() != num_seqs) {
    state.SkipWithError("not every sequence is running after the prefill");
    return;
  }
  int64_t refills = 0;
  for (auto _ : state) {
    if (loop.Cycle(plan)) {
      state.PauseTiming();
      loop.Refill();
      ++refills;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * num_seqs);  // decoded tokens
  state.counters["seqs"] = static_cast<double>(num_seqs);
  state.counters["refills"] = static_cast<double>(refills);
}
void BM_ScheduleUpdateCycle(benchmark::State& state) { Run(state, false); }
void BM_RouterStep(benchmark::State& state) { Run(state, true); }
BENCHMARK(BM_ScheduleUpdateCycle)->Arg(1)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RouterStep)->Arg(1)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace shift

BENCHMARK_MAIN();
