// The router's scheduler driven by hand-made step results on a manual clock
// (no workers, no network): step layout (decodes, then partial prefills, then
// waiting requests in arrival order), chunked prefill, limits, block diffs,
// finishing, cancellation, preemption by recompute and re-forming, plus a
// long randomized run checked against a model of what the ranks hold.
#include "core/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace shift {
namespace {

using Tokens = std::vector<int32_t>;

Tokens Range(int32_t first, int64_t n) {
  Tokens t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = first + static_cast<int32_t>(i);
  return t;
}

Tokens Concat(const Tokens& a, const Tokens& b) {
  Tokens t = a;
  t.insert(t.end(), b.begin(), b.end());
  return t;
}

bool Contains(const std::vector<uint64_t>& ids, uint64_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

const ScheduledSequence* FindSeq(const SchedulerOutput& out, uint64_t id) {
  for (const ScheduledSequence& s : out.sequences) {
    if (s.seq_id == id) return &s;
  }
  return nullptr;
}

const RequestUpdate* FindUpdate(const std::vector<RequestUpdate>& updates, uint64_t id) {
  for (const RequestUpdate& u : updates) {
    if (u.seq_id == id) return &u;
  }
  return nullptr;
}

std::vector<uint64_t> SeqIds(const SchedulerOutput& out) {
  std::vector<uint64_t> ids;
  for (const ScheduledSequence& s : out.sequences) ids.push_back(s.seq_id);
  return ids;
}

struct StepResult {
  SchedulerOutput out;  // its request pointers are stale once the step is applied
  std::vector<RequestUpdate> updates;
};

class SchedulerTest : public ::testing::Test {
 protected:
  using TokenFn = std::function<int32_t(const ScheduledSequence&)>;

  void Make(int64_t num_blocks, int64_t block_size, int64_t max_batched = 2048,
            int64_t max_seqs = 256, int64_t max_model_len = 4096) {
    SchedulerConfig c;
    c.num_blocks = num_blocks;
    c.block_size = block_size;
    c.max_num_batched_tokens = max_batched;
    c.max_num_seqs = max_seqs;
    c.max_model_len = max_model_len;
    sched_ = std::make_unique<Scheduler>(c, &clock_);
  }

  absl::Status Add(uint64_t id, Tokens prompt, uint32_t max_tokens, RequestParams params = {}) {
    const absl::Time arrival = clock_.Now();
    clock_.Advance(absl::Milliseconds(1));
    return AddAt(arrival, id, std::move(prompt), max_tokens, std::move(params));
  }

  absl::Status AddAt(absl::Time arrival, uint64_t id, Tokens prompt, uint32_t max_tokens,
                     RequestParams params = {}) {
    auto r = std::make_unique<Request>();
    r->id = id;
    r->prompt = std::move(prompt);
    params.max_tokens = max_tokens;
    r->params = std::move(params);
    r->arrival = arrival;
    return sched_->AddRequest(std::move(r));
  }

  void ExpectConsistent() {
    const absl::Status s = sched_->CheckConsistency();
    EXPECT_TRUE(s.ok()) << s;
    const absl::Status b = sched_->blocks().CheckConsistency();
    EXPECT_TRUE(b.ok()) << b;
  }

  // A token per sampled sequence, by default 100 + how many it has so far.
  static std::vector<SampledToken> Answer(const SchedulerOutput& out, const TokenFn& token) {
    std::vector<SampledToken> sampled;
    for (const ScheduledSequence& s : out.sequences) {
      if (!s.sample) continue;
      SampledToken t;
      t.seq_id = s.seq_id;
      t.token_id = token(s);
      t.logprob = -0.25f;
      sampled.push_back(t);
    }
    return sampled;
  }

  static int32_t CountingToken(const ScheduledSequence& s) {
    return 100 + static_cast<int32_t>(s.request->output.size());
  }

  StepResult Step(const TokenFn& token = CountingToken) {
    StepResult r;
    r.out = sched_->Schedule();
    ExpectConsistent();
    const std::vector<SampledToken> sampled = Answer(r.out, token);
    r.updates = sched_->UpdateFromOutput(r.out, sampled);
    ExpectConsistent();
    return r;
  }

  ManualClock clock_{absl::UnixEpoch() + absl::Hours(1)};
  std::unique_ptr<Scheduler> sched_;
};

TEST_F(SchedulerTest, AddRequestRejectsEmptyPrompt) {
  Make(64, 4);
  const absl::Status s = Add(1, {}, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(sched_->num_waiting(), 0);
  EXPECT_EQ(sched_->Find(1), nullptr);
  EXPECT_FALSE(sched_->HasWork());
}

TEST_F(SchedulerTest, AddRequestRejectsBeyondMaxModelLen) {
  Make(1000, 4, 2048, 256, /*max_model_len=*/64);
  EXPECT_TRUE(Add(1, Range(1, 10), 54).ok());  // exactly 64
  EXPECT_EQ(Add(2, Range(1, 10), 55).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Add(3, Range(1, 65), 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->num_waiting(), 1);
  EXPECT_NE(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->Find(2), nullptr);
  EXPECT_EQ(sched_->Find(3), nullptr);
  ExpectConsistent();
}

TEST_F(SchedulerTest, AddRequestRejectsWhatCouldNeverFitTheCache) {
  Make(/*num_blocks=*/8, /*block_size=*/4);  // 32 tokens of KV in all
  EXPECT_EQ(Add(1, Range(1, 10), 30).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Add(2, Range(1, 40), 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Add(3, Range(1, 10), 10).ok());
  EXPECT_EQ(sched_->num_waiting(), 1);
  ExpectConsistent();
}

TEST_F(SchedulerTest, AddRequestRejectsDuplicateId) {
  Make(64, 4);
  ASSERT_TRUE(Add(5, Range(1, 3), 4).ok());
  EXPECT_EQ(Add(5, Range(1, 3), 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->num_waiting(), 1);
  ExpectConsistent();
}

TEST_F(SchedulerTest, EmptySchedulerSchedulesNothing) {
  Make(64, 4);
  const SchedulerOutput out = sched_->Schedule();
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(out.step_id, 0u);
  EXPECT_EQ(out.num_tokens, 0);
  EXPECT_TRUE(out.released_seq_ids.empty());
  EXPECT_FALSE(sched_->HasWork());
}

TEST_F(SchedulerTest, PrefillThenDecodesSendOnlyNewBlocks) {
  Make(16, 4);
  const Tokens prompt = Range(10, 5);
  ASSERT_TRUE(Add(7, prompt, 5).ok());
  EXPECT_TRUE(sched_->HasWork());

  SchedulerOutput out = sched_->Schedule();
  ASSERT_EQ(out.sequences.size(), 1u);
  EXPECT_NE(out.step_id, 0u);
  const ScheduledSequence& p = out.sequences[0];
  EXPECT_EQ(p.seq_id, 7u);
  EXPECT_TRUE(p.is_new);
  EXPECT_EQ(p.token_ids, prompt);
  EXPECT_EQ(p.start_position, 0);
  EXPECT_EQ(p.new_block_ids, (Tokens{0, 1}));  // fresh cache: lowest ids
  EXPECT_TRUE(p.sample);
  ASSERT_NE(p.request, nullptr);
  EXPECT_EQ(p.request->id, 7u);
  EXPECT_EQ(out.num_tokens, 5);
  EXPECT_EQ(out.num_decodes, 0);
  EXPECT_EQ(out.max_context, 5);
  EXPECT_TRUE(out.released_seq_ids.empty());
  EXPECT_TRUE(out.preempted.empty());
  EXPECT_EQ(sched_->num_running(), 1);
  EXPECT_EQ(sched_->num_waiting(), 0);
  ExpectConsistent();

  std::vector<RequestUpdate> updates = sched_->UpdateFromOutput(out, Answer(out, CountingToken));
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].seq_id, 7u);
  EXPECT_EQ(updates[0].new_tokens, (Tokens{100}));
  EXPECT_EQ(updates[0].finish, FinishReason::kNone);
  ASSERT_NE(sched_->Find(7), nullptr);
  EXPECT_EQ(sched_->Find(7)->output, (Tokens{100}));

  uint64_t last_step = out.step_id;
  // Decodes at positions 5, 6, 7 fit the two blocks; position 8 needs a third.
  for (int64_t pos = 5; pos <= 8; ++pos) {
    SCOPED_TRACE(pos);
    StepResult r = Step();
    EXPECT_GT(r.out.step_id, last_step);
    last_step = r.out.step_id;
    ASSERT_EQ(r.out.sequences.size(), 1u);
    const ScheduledSequence& d = r.out.sequences[0];
    EXPECT_FALSE(d.is_new);
    EXPECT_EQ(d.token_ids, (Tokens{static_cast<int32_t>(100 + pos - 5)}));
    EXPECT_EQ(d.start_position, pos);
    EXPECT_EQ(d.new_block_ids, pos == 8 ? Tokens{2} : Tokens{});
    EXPECT_TRUE(d.sample);
    EXPECT_EQ(r.out.num_tokens, 1);
    EXPECT_EQ(r.out.num_decodes, 1);
    EXPECT_EQ(r.out.max_context, pos + 1);
    ASSERT_EQ(r.updates.size(), 1u);
    EXPECT_EQ(r.updates[0].new_tokens, (Tokens{static_cast<int32_t>(100 + pos - 4)}));
    EXPECT_EQ(r.updates[0].finish, pos == 8 ? FinishReason::kLength : FinishReason::kNone);
  }
  // Finished: removed, blocks free, released with the next step only.
  EXPECT_EQ(sched_->Find(7), nullptr);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  EXPECT_FALSE(sched_->HasWork());
  out = sched_->Schedule();
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(out.step_id, 0u);
  EXPECT_EQ(out.released_seq_ids, (std::vector<uint64_t>{7}));
  out = sched_->Schedule();
  EXPECT_TRUE(out.released_seq_ids.empty());
  ExpectConsistent();
}

TEST_F(SchedulerTest, ChunkedPrefillSplitsPromptOverBudget) {
  Make(16, 4, /*max_batched=*/8);
  const Tokens prompt = Range(1, 20);
  ASSERT_TRUE(Add(3, prompt, 2).ok());

  StepResult r = Step();
  ASSERT_EQ(r.out.sequences.size(), 1u);
  EXPECT_TRUE(r.out.sequences[0].is_new);
  EXPECT_EQ(r.out.sequences[0].token_ids, Tokens(prompt.begin(), prompt.begin() + 8));
  EXPECT_EQ(r.out.sequences[0].start_position, 0);
  EXPECT_EQ(r.out.sequences[0].new_block_ids, (Tokens{0, 1}));
  EXPECT_FALSE(r.out.sequences[0].sample);
  EXPECT_EQ(r.out.num_tokens, 8);
  EXPECT_EQ(r.out.num_decodes, 0);
  EXPECT_EQ(r.out.max_context, 8);
  EXPECT_TRUE(r.updates.empty());
  EXPECT_TRUE(sched_->Find(3)->output.empty());

  r = Step();
  ASSERT_EQ(r.out.sequences.size(), 1u);
  EXPECT_FALSE(r.out.sequences[0].is_new);
  EXPECT_EQ(r.out.sequences[0].token_ids, Tokens(prompt.begin() + 8, prompt.begin() + 16));
  EXPECT_EQ(r.out.sequences[0].start_position, 8);
  EXPECT_EQ(r.out.sequences[0].new_block_ids, (Tokens{2, 3}));
  EXPECT_FALSE(r.out.sequences[0].sample);
  EXPECT_EQ(r.out.max_context, 16);
  EXPECT_TRUE(r.updates.empty());

  r = Step();
  ASSERT_EQ(r.out.sequences.size(), 1u);
  EXPECT_FALSE(r.out.sequences[0].is_new);
  EXPECT_EQ(r.out.sequences[0].token_ids, Tokens(prompt.begin() + 16, prompt.end()));
  EXPECT_EQ(r.out.sequences[0].start_position, 16);
  EXPECT_EQ(r.out.sequences[0].new_block_ids, (Tokens{4}));
  EXPECT_TRUE(r.out.sequences[0].sample);
  EXPECT_EQ(r.out.num_tokens, 4);
  ASSERT_EQ(r.updates.size(), 1u);
  EXPECT_EQ(r.updates[0].new_tokens, (Tokens{100}));

  r = Step();
  ASSERT_EQ(r.out.sequences.size(), 1u);
  EXPECT_EQ(r.out.sequences[0].token_ids, (Tokens{100}));
  EXPECT_EQ(r.out.sequences[0].start_position, 20);
  EXPECT_EQ(r.out.sequences[0].new_block_ids, (Tokens{5}));
  ASSERT_EQ(r.updates.size(), 1u);
  EXPECT_EQ(r.updates[0].finish, FinishReason::kLength);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, DecodesFirstThenPartialPrefillsThenWaiting) {
  Make(64, 4, /*max_batched=*/10);
  ASSERT_TRUE(Add(1, Range(1, 4), 20).ok());
  StepResult r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1}));

  ASSERT_TRUE(Add(2, Range(200, 20), 20).ok());
  ASSERT_TRUE(Add(3, Range(300, 6), 20).ok());
  // Decode of 1, then 9 of 2's 20 prompt tokens; 3 must wait for budget.
  r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.out.sequences[0].token_ids.size(), 1u);
  EXPECT_TRUE(r.out.sequences[0].sample);
  EXPECT_EQ(r.out.sequences[1].token_ids, Range(200, 9));
  EXPECT_TRUE(r.out.sequences[1].is_new);
  EXPECT_FALSE(r.out.sequences[1].sample);
  EXPECT_EQ(r.out.num_tokens, 10);
  EXPECT_EQ(r.out.num_decodes, 1);
  EXPECT_EQ(sched_->num_waiting(), 1);

  r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.out.sequences[1].token_ids, Range(209, 9));
  EXPECT_EQ(r.out.sequences[1].start_position, 9);
  EXPECT_FALSE(r.out.sequences[1].is_new);
  EXPECT_FALSE(r.out.sequences[1].sample);

  // The decode, the rest of the partial prefill, then the waiting request.
  r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(r.out.sequences[1].token_ids, Range(218, 2));
  EXPECT_EQ(r.out.sequences[1].start_position, 18);
  EXPECT_TRUE(r.out.sequences[1].sample);
  EXPECT_EQ(r.out.sequences[2].token_ids, Range(300, 6));
  EXPECT_TRUE(r.out.sequences[2].is_new);
  EXPECT_TRUE(r.out.sequences[2].sample);
  EXPECT_EQ(r.out.num_tokens, 9);
  EXPECT_EQ(r.out.max_context, 20);

  // All three decode.
  r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2, 3}));
  for (const ScheduledSequence& s : r.out.sequences) {
    EXPECT_EQ(s.token_ids.size(), 1u);
    EXPECT_TRUE(s.sample);
    EXPECT_FALSE(s.is_new);
  }
  EXPECT_EQ(r.out.num_decodes, 3);
  EXPECT_EQ(r.out.max_context, 21);
  EXPECT_EQ(r.updates.size(), 3u);
}

TEST_F(SchedulerTest, PreviewShowsTheDecodesAndThePrefillsThatMayFollow) {
  Make(64, 4, /*max_batched=*/10);
  ASSERT_TRUE(Add(1, Range(1, 4), 20).ok());
  Step();
  ASSERT_TRUE(Add(2, Range(200, 20), 20).ok());
  Step();  // 1 decodes, 2 starts its prefill (9 tokens)
  ASSERT_TRUE(Add(3, Range(300, 6), 20).ok());
  clock_.Advance(absl::Milliseconds(7));
  const StepPreview p = sched_->Preview(/*default_target=*/0.010);
  EXPECT_EQ(p.decodes.num_tokens, 1);
  EXPECT_EQ(p.decodes.num_sequences, 1);
  EXPECT_EQ(p.decodes.num_decodes, 1);
  EXPECT_EQ(p.decodes.max_context, 6);  // 4 + 1 computed, its sixth position
  EXPECT_EQ(p.decodes.attention, 6);
  // 2's rest fills the step's 10 tokens: 3, waiting, could not follow.
  ASSERT_EQ(p.prefills.size(), 1u);
  EXPECT_EQ(p.prefills[0].start_position, 9);
  EXPECT_EQ(p.prefills[0].tokens, 11);
  // 1's token came at the end of the last step, 8 ms ago (7 + Add's 1).
  EXPECT_EQ(p.target, 0.010);
  EXPECT_NEAR(p.slack, 0.002, 1e-9);
  // The step it previews: the same decode first.
  const SchedulerOutput out = sched_->Schedule();
  EXPECT_EQ(out.num_decodes, p.decodes.num_decodes);
  EXPECT_EQ(out.sequences[0].seq_id, 1u);
}

TEST_F(SchedulerTest, PreviewTakesEachDecodesTighterTargetAndSkipsCachedPrefixes) {
  Make(64, 4, /*max_batched=*/12);
  RequestParams tight, loose;
  tight.tpot_target = 0.005;
  loose.tpot_target = 0.050;
  ASSERT_TRUE(Add(1, Range(1, 4), 20, tight).ok());
  ASSERT_TRUE(Add(2, Range(50, 4), 20, loose).ok());
  ASSERT_TRUE(Add(3, Range(500, 9), 20).ok());
  // No decode yet and no default target: nothing to size, nothing previewed.
  EXPECT_TRUE(sched_->Preview().prefills.empty());
  Step();  // 1 and 2 compute their prompts, 3 its first 4 tokens
  clock_.Advance(absl::Milliseconds(2));
  // No default: the decodes' own targets, the tightest 1's (3 ms left).
  StepPreview p = sched_->Preview();
  EXPECT_EQ(p.decodes.num_sequences, 2);
  EXPECT_EQ(p.target, 0.005);
  EXPECT_NEAR(p.slack, 0.003, 1e-9);
  // A default of 20 ms: 1 keeps its own, 2 gets the tighter default.
  p = sched_->Preview(0.020);
  EXPECT_EQ(p.target, 0.005);
  EXPECT_NEAR(p.slack, 0.003, 1e-9);
  p = sched_->Preview(0.004);
  EXPECT_EQ(p.target, 0.004);
  // A waiting request whose first 8 tokens are 3's prompt, cached once
  // computed, is previewed from after them.
  for (int i = 0; i < 4; ++i) Step();
  ASSERT_TRUE(Add(4, Concat(Range(500, 8), Range(900, 3)), 20).ok());
  p = sched_->Preview(0.020);
  ASSERT_FALSE(p.prefills.empty());
  EXPECT_EQ(p.prefills.back().start_position, 8);
  EXPECT_EQ(p.prefills.back().tokens, 3);
  // No candidate past a full step: the 3 decodes and 4's 3 tokens are 6 of
  // the 12; of ten more waiting requests of 4 tokens, two fill it.
  for (uint64_t id = 10; id < 20; ++id) ASSERT_TRUE(Add(id, Range(1000 + 10 * id, 4), 5).ok());
  p = sched_->Preview(0.020);
  EXPECT_EQ(p.prefills.size(), 3u);
  EXPECT_EQ(p.prefills[0].ttft_left, std::numeric_limits<double>::infinity());
  // With a time-to-first-token target of 1 s: 4 arrived 11 ms ago (its own
  // Add and the ten after it advanced the clock 1 ms each).
  p = sched_->Preview(0.020, 1.0);
  EXPECT_NEAR(p.prefills[0].ttft_left, 0.989, 1e-9);
  const StepResult r = Step();
  EXPECT_EQ(FindSeq(r.out, 4)->start_position, 8);  // as Schedule found it
  ExpectConsistent();
}

TEST_F(SchedulerTest, APrefillBudgetCutsChunksNeverDecodes) {
  Make(64, 4, /*max_batched=*/10);
  ASSERT_TRUE(Add(1, Range(1, 4), 20).ok());
  Step();
  ASSERT_TRUE(Add(2, Range(200, 20), 20).ok());
  ASSERT_TRUE(Add(3, Range(300, 6), 20).ok());
  // No prefill: the decode alone.
  SchedulerOutput out = sched_->Schedule(0);
  ASSERT_EQ(SeqIds(out), (std::vector<uint64_t>{1}));
  sched_->UpdateFromOutput(out, Answer(out, CountingToken));
  // Three prefill tokens: 2's first three; 3 waits.
  out = sched_->Schedule(3);
  ASSERT_EQ(SeqIds(out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(out.sequences[1].token_ids, Range(200, 3));
  EXPECT_EQ(out.num_tokens, 4);
  sched_->UpdateFromOutput(out, Answer(out, CountingToken));
  // 2's running chunk and 3's admission share the budget.
  out = sched_->Schedule(18);
  ASSERT_EQ(SeqIds(out), (std::vector<uint64_t>{1, 2}));  // the cap of 10 binds first
  EXPECT_EQ(out.sequences[1].token_ids, Range(203, 9));
  sched_->UpdateFromOutput(out, Answer(out, CountingToken));
  ExpectConsistent();
}

TEST_F(SchedulerTest, MaxNumSeqsRespected) {
  Make(64, 4, 2048, /*max_seqs=*/2);
  ASSERT_TRUE(Add(1, Range(1, 3), 2).ok());
  ASSERT_TRUE(Add(2, Range(1, 3), 4).ok());
  ASSERT_TRUE(Add(3, Range(1, 3), 2).ok());

  StepResult r = Step();
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(sched_->num_running(), 2);
  EXPECT_EQ(sched_->num_waiting(), 1);

  r = Step();  // 1 finishes here; 3 had no room when the step was built
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2}));
  ASSERT_NE(FindUpdate(r.updates, 1), nullptr);
  EXPECT_EQ(FindUpdate(r.updates, 1)->finish, FinishReason::kLength);

  r = Step();
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE(FindSeq(r.out, 3)->is_new);
  EXPECT_EQ(r.out.released_seq_ids, (std::vector<uint64_t>{1}));
  while (sched_->HasWork()) {
    r = Step();
    EXPECT_LE(r.out.sequences.size(), 2u);
    EXPECT_LE(sched_->num_running(), 2);
  }
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, AdmitsWaitingRequestsInArrivalOrderNotIdOrder) {
  // Budget for one prompt per step: admission order is visible step by step.
  Make(64, 4, /*max_batched=*/4);
  ASSERT_TRUE(Add(30, Range(1, 4), 1).ok());
  ASSERT_TRUE(Add(10, Range(1, 4), 1).ok());
  ASSERT_TRUE(Add(20, Range(1, 4), 1).ok());
  std::vector<uint64_t> order;
  while (sched_->HasWork()) {
    StepResult r = Step();
    ASSERT_EQ(r.out.sequences.size(), 1u);
    order.push_back(r.out.sequences[0].seq_id);
    ASSERT_EQ(r.updates.size(), 1u);
    EXPECT_EQ(r.updates[0].finish, FinishReason::kLength);
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{30, 10, 20}));

  // With room for all, one step in arrival order.
  Make(64, 4);
  ASSERT_TRUE(Add(30, Range(1, 4), 1).ok());
  ASSERT_TRUE(Add(10, Range(1, 4), 1).ok());
  ASSERT_TRUE(Add(20, Range(1, 4), 1).ok());
  StepResult r = Step();
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{30, 10, 20}));
}

TEST_F(SchedulerTest, FinishesOnEos) {
  Make(64, 4);
  RequestParams p;
  p.eos_token_ids = {2, 3};
  ASSERT_TRUE(Add(1, Range(10, 4), 10, p).ok());
  StepResult r = Step([](const ScheduledSequence&) { return 5; });
  ASSERT_EQ(r.updates.size(), 1u);
  EXPECT_EQ(r.updates[0].finish, FinishReason::kNone);
  r = Step([](const ScheduledSequence&) { return 3; });
  ASSERT_EQ(r.updates.size(), 1u);
  EXPECT_EQ(r.updates[0].new_tokens, (Tokens{3}));
  EXPECT_EQ(r.updates[0].finish, FinishReason::kEos);
  EXPECT_EQ(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  EXPECT_EQ(sched_->Schedule().released_seq_ids, (std::vector<uint64_t>{1}));
}

TEST_F(SchedulerTest, PlansADecodeOfAPendingTokenAheadOfTheResults) {
  Make(64, 4);
  ASSERT_TRUE(Add(1, Range(10, 4), 3).ok());
  const SchedulerOutput first = sched_->Schedule();  // the prompt, sampling token 1
  ASSERT_EQ(first.sequences.size(), 1u);
  EXPECT_TRUE(first.sequences[0].sample);
  // Planned before the first step's results: the decode of its token.
  const SchedulerOutput second = sched_->Schedule();
  ASSERT_EQ(second.sequences.size(), 1u);
  EXPECT_EQ(second.sequences[0].token_ids, (Tokens{kPendingToken}));
  EXPECT_EQ(second.sequences[0].start_position, 4);
  EXPECT_TRUE(second.sequences[0].sample);
  EXPECT_EQ(second.num_decodes, 1);
  ExpectConsistent();
  // Never two steps ahead: the next decode waits for the first results.
  EXPECT_TRUE(sched_->Schedule().empty());
  auto updates = sched_->UpdateFromOutput(first, {{1, 50, 0.0f, {}}});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].new_tokens, (Tokens{50}));
  // The next plan, ahead again, knows token 50 and decodes token 2's slot.
  const SchedulerOutput third = sched_->Schedule();
  ASSERT_EQ(third.sequences.size(), 1u);
  EXPECT_EQ(third.sequences[0].token_ids, (Tokens{kPendingToken}));
  EXPECT_EQ(third.sequences[0].start_position, 5);
  updates = sched_->UpdateFromOutput(second, {{1, 51, 0.0f, {}}});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].new_tokens, (Tokens{51}));
  updates = sched_->UpdateFromOutput(third, {{1, 52, 0.0f, {}}});
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].finish, FinishReason::kLength);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  ExpectConsistent();
}

TEST_F(SchedulerTest, AnEosFoundAStepLateDropsTheExtraTokenAndReleasesAfter) {
  Make(64, 4);
  RequestParams p;
  p.eos_token_ids = {2};
  ASSERT_TRUE(Add(1, Range(10, 4), 10, p).ok());
  const SchedulerOutput first = sched_->Schedule();
  const SchedulerOutput second = sched_->Schedule();  // ahead: decodes the pending token
  ASSERT_EQ(second.sequences.size(), 1u);
  auto updates = sched_->UpdateFromOutput(first, {{1, 2, 0.0f, {}}});  // EOS
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].finish, FinishReason::kEos);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  // The second step computed one token too many: it is never delivered...
  EXPECT_TRUE(sched_->UpdateFromOutput(second, {{1, 77, 0.0f, {}}}).empty());
  // ... and the ranks forget the sequence with the step after.
  EXPECT_EQ(sched_->Schedule().released_seq_ids, (std::vector<uint64_t>{1}));
  ExpectConsistent();
}

TEST_F(SchedulerTest, ABlockCompletedByAPendingTokenIsCachedOnceTheTokenIsKnown) {
  Make(64, 4);
  // Seven prompt tokens: the pending eighth completes the second block.
  ASSERT_TRUE(Add(1, Range(10, 7), 5).ok());
  const SchedulerOutput first = sched_->Schedule();
  const SchedulerOutput second = sched_->Schedule();
  ASSERT_EQ(second.sequences.size(), 1u);
  EXPECT_EQ(second.sequences[0].start_position, 7);
  sched_->UpdateFromOutput(first, {{1, 90, 0.0f, {}}});
  sched_->UpdateFromOutput(second, {{1, 91, 0.0f, {}}});
  // A prompt of the same eight tokens and one more finds both blocks.
  ASSERT_TRUE(Add(2, Concat(Range(10, 7), {90, 5}), 1).ok());
  const SchedulerOutput third = sched_->Schedule();
  const ScheduledSequence* two = FindSeq(third, 2);
  ASSERT_NE(two, nullptr);
  EXPECT_EQ(two->start_position, 8);
  ExpectConsistent();
}

TEST_F(SchedulerTest, IgnoreEosRunsToMaxTokens) {
  Make(64, 4);
  RequestParams p;
  p.eos_token_ids = {2};
  p.ignore_eos = true;
  ASSERT_TRUE(Add(1, Range(10, 4), 4, p).ok());
  std::vector<FinishReason> finishes;
  int steps = 0;
  while (sched_->HasWork() && steps++ < 10) {
    StepResult r = Step([](const ScheduledSequence&) { return 2; });
    ASSERT_EQ(r.updates.size(), 1u);
    EXPECT_EQ(r.updates[0].new_tokens, (Tokens{2}));
    finishes.push_back(r.updates[0].finish);
  }
  EXPECT_EQ(finishes, (std::vector<FinishReason>{FinishReason::kNone, FinishReason::kNone,
                                                 FinishReason::kNone, FinishReason::kLength}));
}

TEST_F(SchedulerTest, FinishesOnStopTokenId) {
  Make(64, 4);
  RequestParams p;
  p.stop_token_ids = {42};
  p.eos_token_ids = {2};
  p.ignore_eos = true;  // stop tokens still count
  ASSERT_TRUE(Add(1, Range(10, 4), 10, p).ok());
  StepResult r = Step([](const ScheduledSequence&) { return 2; });
  EXPECT_EQ(r.updates[0].finish, FinishReason::kNone);
  r = Step([](const ScheduledSequence&) { return 42; });
  ASSERT_EQ(r.updates.size(), 1u);
  EXPECT_EQ(r.updates[0].new_tokens, (Tokens{42}));
  EXPECT_EQ(r.updates[0].finish, FinishReason::kStop);
  EXPECT_EQ(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, ReturnsLogprobsOnlyWhenAsked) {
  Make(64, 4);
  RequestParams with;
  with.return_logprob = true;
  ASSERT_TRUE(Add(1, Range(10, 4), 3, with).ok());
  ASSERT_TRUE(Add(2, Range(10, 4), 3).ok());
  StepResult r = Step();
  ASSERT_EQ(r.updates.size(), 2u);
  const RequestUpdate* a = FindUpdate(r.updates, 1);
  const RequestUpdate* b = FindUpdate(r.updates, 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->new_logprobs, (std::vector<float>{-0.25f}));
  EXPECT_TRUE(b->new_logprobs.empty());
  EXPECT_EQ(sched_->Find(1)->logprobs, (std::vector<float>{-0.25f}));
}

TEST_F(SchedulerTest, CancelWaitingAndRunningFreesBlocksAtOnce) {
  Make(16, 4, 2048, /*max_seqs=*/1);
  ASSERT_TRUE(Add(1, Range(1, 6), 8).ok());
  ASSERT_TRUE(Add(2, Range(1, 5), 8).ok());
  ASSERT_TRUE(Add(3, Range(1, 3), 8).ok());
  StepResult r = Step();
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1}));
  EXPECT_EQ(sched_->blocks().num_used(), 2);

  // A waiting request.
  std::vector<RequestUpdate> u = sched_->FinishRequests({3}, FinishReason::kCancelled);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].seq_id, 3u);
  EXPECT_EQ(u[0].finish, FinishReason::kCancelled);
  EXPECT_TRUE(u[0].new_tokens.empty());
  EXPECT_EQ(sched_->Find(3), nullptr);
  EXPECT_EQ(sched_->num_waiting(), 1);
  ExpectConsistent();

  // A running request, with an unknown id alongside.
  u = sched_->FinishRequests({1, 99}, FinishReason::kCancelled);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].seq_id, 1u);
  EXPECT_EQ(u[0].finish, FinishReason::kCancelled);
  EXPECT_EQ(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->num_running(), 0);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  ExpectConsistent();

  r = Step();
  EXPECT_TRUE(Contains(r.out.released_seq_ids, 1));
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{2}));
  EXPECT_TRUE(r.out.sequences[0].is_new);

  // A request's end decided outside the scheduler (a stop string).
  u = sched_->FinishRequests({2}, FinishReason::kStop);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].finish, FinishReason::kStop);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  EXPECT_FALSE(sched_->HasWork());
  // Ending it again: unknown now, ignored.
  EXPECT_TRUE(sched_->FinishRequests({2}, FinishReason::kCancelled).empty());
  const SchedulerOutput out = sched_->Schedule();
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(out.released_seq_ids, (std::vector<uint64_t>{2}));
  ExpectConsistent();
}

TEST_F(SchedulerTest, CancelDuringChunkedPrefillFreesBlocks) {
  Make(16, 4, /*max_batched=*/8);
  ASSERT_TRUE(Add(1, Range(1, 30), 4).ok());
  StepResult r = Step();
  EXPECT_FALSE(r.out.sequences[0].sample);
  EXPECT_EQ(sched_->blocks().num_used(), 2);
  const std::vector<RequestUpdate> u = sched_->FinishRequests({1}, FinishReason::kCancelled);
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  ExpectConsistent();
  EXPECT_EQ(sched_->Schedule().released_seq_ids, (std::vector<uint64_t>{1}));
}

TEST_F(SchedulerTest, TokenForRequestCancelledInFlightIsIgnored) {
  Make(16, 4);
  ASSERT_TRUE(Add(1, Range(1, 3), 5).ok());
  ASSERT_TRUE(Add(2, Range(1, 3), 5).ok());
  const SchedulerOutput out = sched_->Schedule();
  ASSERT_EQ(out.sequences.size(), 2u);
  const std::vector<SampledToken> sampled = Answer(out, CountingToken);
  ASSERT_EQ(sampled.size(), 2u);
  ASSERT_EQ(sched_->FinishRequests({1}, FinishReason::kCancelled).size(), 1u);
  EXPECT_EQ(sched_->blocks().num_used(), 1);
  const std::vector<RequestUpdate> updates = sched_->UpdateFromOutput(out, sampled);
  ExpectConsistent();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].seq_id, 2u);
  EXPECT_EQ(updates[0].new_tokens, (Tokens{100}));
  EXPECT_EQ(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->blocks().num_used(), 1);

  StepResult r = Step();
  EXPECT_TRUE(Contains(r.out.released_seq_ids, 1));
  EXPECT_EQ(SeqIds(r.out), (std::vector<uint64_t>{2}));
}

TEST_F(SchedulerTest, PreemptsMostRecentlyArrivedAndRecomputes) {
  // 6 blocks of 4: three 4-token prompts decode together until each needs a
  // third block (position 8), then there is room for two.
  Make(/*num_blocks=*/6, /*block_size=*/4);
  const std::map<uint64_t, Tokens> prompts = {
      {11, Range(110, 4)}, {12, Range(120, 4)}, {13, Range(130, 4)}};
  for (uint64_t id : {11, 12, 13}) ASSERT_TRUE(Add(id, prompts.at(id), 12).ok());
  auto token = [](const ScheduledSequence& s) {
    return static_cast<int32_t>(1000 * (s.seq_id - 10) + s.request->output.size());
  };

  std::vector<std::vector<uint64_t>> preemptions;
  Tokens output_at_preemption;
  // 13's recompute: it may be preempted again part-way through (a partial
  // prefill that cannot grow), so each run restarts from is_new.
  bool rerun_seen = false, expect_new = false;
  Tokens rerun_tokens, rerun_blocks;
  std::map<uint64_t, FinishReason> finishes;
  for (int step = 0; step < 200 && sched_->HasWork(); ++step) {
    SCOPED_TRACE(step);
    const SchedulerOutput out = sched_->Schedule();
    ExpectConsistent();
    ASSERT_FALSE(out.empty());
    for (uint64_t id : out.preempted) EXPECT_TRUE(Contains(out.released_seq_ids, id)) << id;
    if (Contains(out.preempted, 13)) expect_new = true;
    if (!out.preempted.empty()) {
      preemptions.push_back(out.preempted);
      if (preemptions.size() == 1) {
        // All three ran decodes at positions 4..7; 11 and 12 go on.
        EXPECT_EQ(out.preempted, (std::vector<uint64_t>{13}));
        EXPECT_EQ(SeqIds(out), (std::vector<uint64_t>{11, 12}));
        ASSERT_NE(sched_->Find(13), nullptr);
        output_at_preemption = sched_->Find(13)->output;
        EXPECT_EQ(output_at_preemption.size(), 5u);
        EXPECT_GE(sched_->Find(13)->num_preemptions, 1);
        EXPECT_EQ(sched_->Find(13)->state, Request::State::kWaiting);
      }
    }
    if (const ScheduledSequence* s = FindSeq(out, 13);
        s != nullptr && !preemptions.empty() && !rerun_seen) {
      EXPECT_EQ(s->is_new, expect_new);
      if (s->is_new) {
        expect_new = false;
        rerun_tokens.clear();
        rerun_blocks.clear();
      }
      EXPECT_EQ(s->start_position, static_cast<int64_t>(rerun_tokens.size()));
      rerun_tokens.insert(rerun_tokens.end(), s->token_ids.begin(), s->token_ids.end());
      rerun_blocks.insert(rerun_blocks.end(), s->new_block_ids.begin(), s->new_block_ids.end());
      EXPECT_EQ(rerun_blocks, sched_->blocks().Table(13));
      if (s->sample) {
        rerun_seen = true;
        EXPECT_EQ(rerun_tokens, Concat(prompts.at(13), output_at_preemption));
      }
    }
    const std::vector<RequestUpdate> updates = sched_->UpdateFromOutput(out, Answer(out, token));
    ExpectConsistent();
    for (const RequestUpdate& u : updates) {
      if (u.finish != FinishReason::kNone) finishes[u.seq_id] = u.finish;
    }
  }
  EXPECT_FALSE(sched_->HasWork());
  ASSERT_GE(preemptions.size(), 1u);
  EXPECT_TRUE(rerun_seen);
  int64_t num_preempted = 0;
  for (const auto& p : preemptions) num_preempted += static_cast<int64_t>(p.size());
  EXPECT_EQ(sched_->num_preemptions(), num_preempted);
  EXPECT_EQ(finishes, (std::map<uint64_t, FinishReason>{{11, FinishReason::kLength},
                                                        {12, FinishReason::kLength},
                                                        {13, FinishReason::kLength}}));
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, PreemptedRequestKeepsItsOutputAcrossRecompute) {
  // Same shape as above, checking each request's tokens end up as the
  // uninterrupted sequence 1000*k + 0..11 however often it was preempted.
  Make(6, 4);
  for (uint64_t id : {1, 2, 3}) ASSERT_TRUE(Add(id, Range(10 * id, 4), 12).ok());
  std::map<uint64_t, Tokens> outputs;
  for (int step = 0; step < 200 && sched_->HasWork(); ++step) {
    StepResult r = Step([](const ScheduledSequence& s) {
      return static_cast<int32_t>(1000 * s.seq_id + s.request->output.size());
    });
    for (const RequestUpdate& u : r.updates) {
      outputs[u.seq_id].insert(outputs[u.seq_id].end(), u.new_tokens.begin(), u.new_tokens.end());
    }
  }
  EXPECT_FALSE(sched_->HasWork());
  EXPECT_GT(sched_->num_preemptions(), 0);
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(outputs[id], Range(1000 * id, 12)) << id;
}

// A request stamped earlier than one already decoding (a wall clock stepped
// back) is admitted behind it but runs ahead of it in arrival order; when its
// prefill runs out of blocks, the victim is the later arrival, whose decode is
// already in the step. The victim must leave the step, not stay in it with
// its blocks handed on.
TEST_F(SchedulerTest, PreemptedSequenceLeavesTheStepItWasScheduledIn) {
  Make(/*num_blocks=*/6, /*block_size=*/4, /*max_batched=*/6);
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(AddAt(t0 + absl::Seconds(10), 2, Range(200, 4), 16).ok());
  Step();
  ASSERT_TRUE(AddAt(t0 + absl::Seconds(5), 1, Range(100, 20), 1).ok());
  bool preempted = false;
  for (int step = 0; step < 20 && sched_->HasWork(); ++step) {
    SCOPED_TRACE(step);
    const SchedulerOutput out = sched_->Schedule();
    ExpectConsistent();
    for (const ScheduledSequence& s : out.sequences) {
      EXPECT_TRUE(s.is_new || !Contains(out.released_seq_ids, s.seq_id))
          << s.seq_id << " released and scheduled as running";
      EXPECT_TRUE(s.is_new || !Contains(out.preempted, s.seq_id))
          << s.seq_id << " preempted and scheduled as running";
    }
    // No block serves two sequences of the step.
    std::set<int32_t> blocks;
    for (const ScheduledSequence& s : out.sequences) {
      if (Contains(out.preempted, s.seq_id)) continue;
      for (int32_t b : sched_->blocks().Table(s.seq_id)) {
        EXPECT_TRUE(blocks.insert(b).second) << "block " << b << " shared";
      }
    }
    if (!out.preempted.empty()) {
      preempted = true;
      EXPECT_EQ(out.preempted, (std::vector<uint64_t>{2}));
    }
    sched_->UpdateFromOutput(out, Answer(out, CountingToken));
    ExpectConsistent();
  }
  EXPECT_TRUE(preempted);
  EXPECT_FALSE(sched_->HasWork());
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, RequeueAllRecomputesRunningAheadOfWaiting) {
  Make(32, 4, 2048, /*max_seqs=*/2);
  ASSERT_TRUE(Add(1, Range(10, 5), 8).ok());
  ASSERT_TRUE(Add(2, Range(20, 3), 8).ok());
  ASSERT_TRUE(Add(3, Range(30, 2), 8).ok());
  Step();
  Step();
  ASSERT_EQ(sched_->Find(1)->output, (Tokens{100, 101}));
  ASSERT_EQ(sched_->Find(2)->output, (Tokens{100, 101}));

  const SchedulerOutput failed = sched_->Schedule();
  ASSERT_EQ(SeqIds(failed), (std::vector<uint64_t>{1, 2}));
  sched_->RequeueAll();
  ExpectConsistent();
  EXPECT_EQ(sched_->num_running(), 0);
  EXPECT_EQ(sched_->num_waiting(), 3);
  EXPECT_EQ(sched_->blocks().num_used(), 0);
  EXPECT_TRUE(sched_->HasWork());

  StepResult r = Step();
  ASSERT_EQ(SeqIds(r.out), (std::vector<uint64_t>{1, 2}));
  const Tokens want1 = Concat(Range(10, 5), Tokens{100, 101});
  const Tokens want2 = Concat(Range(20, 3), Tokens{100, 101});
  for (const ScheduledSequence& s : r.out.sequences) {
    EXPECT_TRUE(s.is_new) << s.seq_id;
    EXPECT_EQ(s.start_position, 0);
    EXPECT_TRUE(s.sample);
    EXPECT_EQ(s.token_ids, s.seq_id == 1 ? want1 : want2);
    EXPECT_EQ(s.new_block_ids, sched_->blocks().Table(s.seq_id));
  }
  ASSERT_EQ(r.updates.size(), 2u);
  EXPECT_EQ(r.updates[0].new_tokens, (Tokens{102}));
  std::map<uint64_t, FinishReason> finishes;
  while (sched_->HasWork()) {
    r = Step();
    for (const RequestUpdate& u : r.updates) {
      if (u.finish != FinishReason::kNone) finishes[u.seq_id] = u.finish;
    }
  }
  EXPECT_EQ(finishes.size(), 3u);
  for (const auto& [id, f] : finishes) EXPECT_EQ(f, FinishReason::kLength) << id;
  EXPECT_EQ(sched_->blocks().num_used(), 0);
}

TEST_F(SchedulerTest, RecordsScheduleAndFirstTokenTimes) {
  Make(16, 4);
  ASSERT_TRUE(Add(1, Range(1, 4), 3).ok());
  clock_.Advance(absl::Seconds(2));
  const absl::Time scheduled = clock_.Now();
  const SchedulerOutput out = sched_->Schedule();
  clock_.Advance(absl::Seconds(3));
  sched_->UpdateFromOutput(out, Answer(out, CountingToken));
  ASSERT_NE(sched_->Find(1), nullptr);
  EXPECT_EQ(sched_->Find(1)->first_scheduled, scheduled);
  EXPECT_EQ(sched_->Find(1)->first_token, scheduled + absl::Seconds(3));
}

TEST_F(SchedulerTest, CountsEachRequestsStepsByMode) {
  Make(16, 4, /*max_batched=*/8);
  ASSERT_TRUE(Add(1, Range(1, 12), 2).ok());  // two prefill chunks, then a decode
  const StepMode modes[] = {StepMode::kSequenceParallel, StepMode::kTensorParallel,
                            StepMode::kSequenceParallel};
  std::vector<RequestUpdate> last;
  for (StepMode mode : modes) {
    const SchedulerOutput out = sched_->Schedule();
    last = sched_->UpdateFromOutput(out, Answer(out, CountingToken), mode);
  }
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].finish, FinishReason::kLength);
  EXPECT_EQ(last[0].sp_steps, 2);
  EXPECT_EQ(last[0].tp_steps, 1);
}

// ---------------------------------------------------------------------------
// Randomized: arrivals, cancellations (also while a step is in flight),
// steps with random tokens and failed steps, on a cache small enough that
// preemption is frequent. After every operation both consistency checks
// hold, and every step is checked against a model of what the ranks hold
// (each sequence's table as built from the steps' block diffs and its
// computed positions).

struct ModelRequest {
  Tokens prompt;
  RequestParams params;
  Tokens output;
  int finishes = 0;
  FinishReason finish = FinishReason::kNone;
  int64_t token_count() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  int32_t token(int64_t i) const {
    const int64_t p = static_cast<int64_t>(prompt.size());
    return i < p ? prompt[i] : output[i - p];
  }
};

// What the ranks hold for one sequence.
struct RankSeq {
  Tokens table;
  int64_t computed = 0;
  bool decoding = false;  // its prefill is done and it has sampled
};

class RandomRun {
 public:
  static constexpr int64_t kBlockSize = 4;
  static constexpr int64_t kNumBlocks = 16;
  static constexpr int64_t kMaxBatched = 24;
  static constexpr int64_t kMaxSeqs = 6;
  static constexpr int64_t kMaxModelLen = 60;  // within the 64 tokens of KV
  static constexpr int32_t kEos = 7;
  static constexpr int32_t kStop = 9;
  static constexpr int32_t kVocab = 50;

  // With `skewed_arrivals`, some requests carry an arrival time before ones
  // already queued (a wall clock stepped back, a simulator's trace).
  RandomRun(uint64_t seed, bool skewed_arrivals)
      : skewed_arrivals_(skewed_arrivals), rng_(seed), sched_(Config(), &clock_) {}

  static SchedulerConfig Config() {
    SchedulerConfig c;
    // This model of the ranks owns each block once; prefix sharing has its
    // own randomized test below.
    c.enable_prefix_caching = false;
    c.block_size = kBlockSize;
    c.num_blocks = kNumBlocks;
    c.max_num_batched_tokens = kMaxBatched;
    c.max_num_seqs = kMaxSeqs;
    c.max_model_len = kMaxModelLen;
    return c;
  }

  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  void Check() {
    const absl::Status s = sched_.CheckConsistency();
    ASSERT_TRUE(s.ok()) << s;
    const absl::Status b = sched_.blocks().CheckConsistency();
    ASSERT_TRUE(b.ok()) << b;
    ASSERT_EQ(sched_.num_running() + sched_.num_waiting(), static_cast<int64_t>(live_.size()));
    ASSERT_LE(sched_.num_running(), kMaxSeqs);
    for (uint64_t id : live_) {
      const Request* r = sched_.Find(id);
      ASSERT_NE(r, nullptr) << id;
      ASSERT_EQ(r->output, models_[id].output) << id;
    }
    for (uint64_t id : ended_) ASSERT_EQ(sched_.Find(id), nullptr) << id;
  }

  void AddRandom() {
    const uint64_t id = 1000000 - next_++;  // later arrivals get smaller ids
    ModelRequest m;
    const bool empty = Chance(0.01);
    const int64_t len = empty ? 0 : Uniform(1, 40);
    for (int64_t i = 0; i < len; ++i)
      m.prompt.push_back(static_cast<int32_t>(Uniform(0, kVocab - 1)));
    m.params.max_tokens = static_cast<uint32_t>(Uniform(1, 30));
    m.params.eos_token_ids = {kEos};
    m.params.ignore_eos = Chance(0.3);
    if (Chance(0.3)) m.params.stop_token_ids = {kStop};
    m.params.return_logprob = Chance(0.5);
    const bool valid = !empty && len + m.params.max_tokens <= kMaxModelLen;
    auto r = std::make_unique<Request>();
    r->id = id;
    r->prompt = m.prompt;
    r->params = m.params;
    r->arrival = clock_.Now();
    if (skewed_arrivals_ && Chance(0.3)) r->arrival -= absl::Milliseconds(Uniform(1, 50));
    const absl::Status s = sched_.AddRequest(std::move(r));
    if (!valid) {
      ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      ++rejected_;
      return;
    }
    ASSERT_TRUE(s.ok()) << s;
    models_[id] = std::move(m);
    live_.insert(id);
    ++accepted_;
    // Now and then, the same id again.
    if (Chance(0.02)) {
      auto dup = std::make_unique<Request>();
      dup->id = id;
      dup->prompt = {1, 2, 3};
      dup->params.max_tokens = 1;
      ASSERT_EQ(sched_.AddRequest(std::move(dup)).code(), absl::StatusCode::kInvalidArgument);
    }
  }

  void ApplyFinish(const RequestUpdate& u, FinishReason want) {
    ASSERT_EQ(u.finish, want) << u.seq_id;
    ASSERT_NO_FATAL_FAILURE(EndRequest(u.seq_id, u.finish));
  }

  void EndRequest(uint64_t id, FinishReason reason) {
    ASSERT_TRUE(live_.count(id)) << "finished twice or unknown: " << id;
    ModelRequest& m = models_[id];
    ++m.finishes;
    m.finish = reason;
    live_.erase(id);
    ended_.insert(id);
    ++finish_counts_[reason];
  }

  void CancelRandom() {
    std::vector<uint64_t> ids;
    const int n = static_cast<int>(Uniform(1, 3));
    for (int i = 0; i < n && !live_.empty(); ++i) {
      auto it = live_.begin();
      std::advance(it, Uniform(0, static_cast<int64_t>(live_.size()) - 1));
      ids.push_back(*it);
    }
    if (Chance(0.3)) ids.push_back(7);  // never used as an id
    if (!ended_.empty() && Chance(0.3)) ids.push_back(*ended_.begin());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    const std::vector<RequestUpdate> updates = sched_.FinishRequests(ids, FinishReason::kCancelled);
    size_t want = 0;
    for (uint64_t id : ids) want += live_.count(id);
    ASSERT_EQ(updates.size(), want);
    for (const RequestUpdate& u : updates) {
      ASSERT_TRUE(u.new_tokens.empty());
      ASSERT_NO_FATAL_FAILURE(ApplyFinish(u, FinishReason::kCancelled));
    }
  }

  void CheckNoSharedBlocks() {
    std::map<int32_t, uint64_t> owner;
    for (const auto& [id, seq] : ranks_) {
      for (int32_t b : seq.table) {
        ASSERT_GE(b, 0);
        ASSERT_LT(b, kNumBlocks);
        const auto [it, inserted] = owner.emplace(b, id);
        ASSERT_TRUE(inserted) << "block " << b << " in " << it->second << " and " << id;
      }
    }
  }

  void Step(bool allow_failures) {
    const SchedulerOutput out = sched_.Schedule();
    ASSERT_NO_FATAL_FAILURE(Check());
    // A released (or preempted) sequence can only come back as new.
    for (const ScheduledSequence& s : out.sequences) {
      ASSERT_TRUE(s.is_new || !Contains(out.released_seq_ids, s.seq_id))
          << s.seq_id << " is released and scheduled as running in one step";
      ASSERT_TRUE(s.is_new || !Contains(out.preempted, s.seq_id))
          << s.seq_id << " is preempted and scheduled as running in one step";
    }
    // Ranks forget released sequences before the step.
    for (uint64_t id : out.released_seq_ids) ranks_.erase(id);
    for (uint64_t id : out.preempted) {
      ASSERT_TRUE(Contains(out.released_seq_ids, id)) << id;
      ASSERT_TRUE(live_.count(id)) << id;
    }
    preempted_ += static_cast<int64_t>(out.preempted.size());
    if (out.empty()) {
      ASSERT_EQ(out.step_id, 0u);
      ASSERT_FALSE(sched_.HasWork()) << "work left but nothing scheduled";
      return;
    }
    ASSERT_GT(out.step_id, last_step_);
    last_step_ = out.step_id;
    ++steps_;
    ASSERT_LE(static_cast<int64_t>(out.sequences.size()), kMaxSeqs);

    // Every sequence the ranks hold in decode runs in this step, first.
    std::set<uint64_t> decoders;
    for (const auto& [id, seq] : ranks_) {
      if (seq.decoding) decoders.insert(id);
    }
    int64_t tokens = 0, max_context = 0, one_token_samples = 0;
    bool seen_prefill = false;
    std::set<uint64_t> in_step;
    for (const ScheduledSequence& s : out.sequences) {
      SCOPED_TRACE(s.seq_id);
      ASSERT_TRUE(in_step.insert(s.seq_id).second) << "scheduled twice";
      ASSERT_TRUE(live_.count(s.seq_id));
      ASSERT_NE(s.request, nullptr);
      ASSERT_EQ(s.request->id, s.seq_id);
      ASSERT_FALSE(s.token_ids.empty());
      const ModelRequest& m = models_[s.seq_id];
      const bool held = ranks_.count(s.seq_id) > 0;
      ASSERT_EQ(s.is_new, !held);
      RankSeq& seq = ranks_[s.seq_id];
      // Decodes lead the step. A prefill's last single token (one token, a
      // sample, a sequence the ranks hold) looks like a decode and may run
      // among them.
      const bool decode = decoders.count(s.seq_id) > 0;
      const bool decode_shaped = !s.is_new && s.token_ids.size() == 1 && s.sample;
      if (decode) {
        ASSERT_FALSE(seen_prefill) << "decode after a prefill chunk";
        ASSERT_EQ(s.token_ids.size(), 1u);
      }
      if (!decode_shaped) seen_prefill = true;
      if (s.is_new) {
        ASSERT_EQ(s.start_position, 0);
        seq = RankSeq{};
      }
      ASSERT_EQ(s.start_position, seq.computed);
      for (size_t i = 0; i < s.token_ids.size(); ++i) {
        ASSERT_EQ(s.token_ids[i], m.token(s.start_position + static_cast<int64_t>(i))) << i;
      }
      seq.computed += static_cast<int64_t>(s.token_ids.size());
      ASSERT_LE(seq.computed, m.token_count());
      ASSERT_EQ(s.sample, seq.computed == m.token_count());
      seq.table.insert(seq.table.end(), s.new_block_ids.begin(), s.new_block_ids.end());
      ASSERT_EQ(seq.table, sched_.blocks().Table(s.seq_id));
      ASSERT_EQ(static_cast<int64_t>(seq.table.size()),
                (seq.computed + kBlockSize - 1) / kBlockSize);
      tokens += static_cast<int64_t>(s.token_ids.size());
      max_context = std::max(max_context, seq.computed);
      if (s.token_ids.size() == 1 && s.sample) ++one_token_samples;
    }
    for (uint64_t id : decoders) ASSERT_TRUE(in_step.count(id)) << "decode skipped: " << id;
    ASSERT_EQ(out.num_tokens, tokens);
    ASSERT_LE(tokens, kMaxBatched);
    ASSERT_EQ(out.max_context, max_context);
    ASSERT_GE(out.num_decodes, static_cast<int64_t>(decoders.size()));
    ASSERT_LE(out.num_decodes, one_token_samples);
    ASSERT_NO_FATAL_FAILURE(CheckNoSharedBlocks());

    if (allow_failures && Chance(0.03)) {
      sched_.RequeueAll();
      ranks_.clear();  // the group re-forms with nothing
      ++requeues_;
      ASSERT_EQ(sched_.num_running(), 0);
      ASSERT_EQ(sched_.blocks().num_used(), 0);
      ASSERT_NO_FATAL_FAILURE(Check());
      return;
    }

    std::vector<SampledToken> sampled;
    for (const ScheduledSequence& s : out.sequences) {
      if (!s.sample) continue;
      SampledToken t;
      t.seq_id = s.seq_id;
      t.token_id = static_cast<int32_t>(Uniform(0, kVocab - 1));
      t.logprob = -static_cast<float>(Uniform(0, 1000)) / 100.0f;
      sampled.push_back(t);
    }
    // Sometimes a client goes away while the step runs.
    std::set<uint64_t> cancelled_in_flight;
    if (allow_failures && !sampled.empty() && Chance(0.05)) {
      const uint64_t id = sampled[Uniform(0, static_cast<int64_t>(sampled.size()) - 1)].seq_id;
      const std::vector<RequestUpdate> u = sched_.FinishRequests({id}, FinishReason::kCancelled);
      ASSERT_EQ(u.size(), 1u);
      ASSERT_NO_FATAL_FAILURE(ApplyFinish(u[0], FinishReason::kCancelled));
      cancelled_in_flight.insert(id);
      ++cancelled_in_flight_;
      ASSERT_NO_FATAL_FAILURE(Check());
    }
    const std::vector<RequestUpdate> updates = sched_.UpdateFromOutput(out, sampled);
    std::set<uint64_t> updated;
    for (const RequestUpdate& u : updates) {
      SCOPED_TRACE(u.seq_id);
      ASSERT_TRUE(updated.insert(u.seq_id).second) << "two updates";
      ASSERT_FALSE(cancelled_in_flight.count(u.seq_id)) << "token for a cancelled request";
    }
    for (const SampledToken& t : sampled) {
      SCOPED_TRACE(t.seq_id);
      if (cancelled_in_flight.count(t.seq_id)) continue;
      const RequestUpdate* u = FindUpdate(updates, t.seq_id);
      ASSERT_NE(u, nullptr) << "sampled but no update";
      ASSERT_EQ(u->new_tokens, Tokens{t.token_id});
      ModelRequest& m = models_[t.seq_id];
      if (m.params.return_logprob) {
        ASSERT_EQ(u->new_logprobs, std::vector<float>{t.logprob});
      } else {
        ASSERT_TRUE(u->new_logprobs.empty());
      }
      m.output.push_back(t.token_id);
      ASSERT_LE(m.output.size(), m.params.max_tokens);
      ranks_[t.seq_id].decoding = true;
      // Which reasons may end it now.
      std::set<FinishReason> allowed;
      const auto has = [](const std::vector<int32_t>& v, int32_t x) {
        return std::find(v.begin(), v.end(), x) != v.end();
      };
      if (has(m.params.stop_token_ids, t.token_id)) allowed.insert(FinishReason::kStop);
      if (!m.params.ignore_eos && has(m.params.eos_token_ids, t.token_id)) {
        allowed.insert(FinishReason::kEos);
      }
      if (m.output.size() == m.params.max_tokens) allowed.insert(FinishReason::kLength);
      if (allowed.empty()) {
        ASSERT_EQ(u->finish, FinishReason::kNone);
      } else {
        ASSERT_TRUE(allowed.count(u->finish)) << "finish " << FinishReasonName(u->finish);
        ASSERT_NO_FATAL_FAILURE(EndRequest(t.seq_id, u->finish));
      }
    }
    ASSERT_EQ(updates.size() + cancelled_in_flight.size(), sampled.size());
    ASSERT_NO_FATAL_FAILURE(Check());
  }

  void Run(int iterations) {
    for (int iter = 0; iter < iterations; ++iter) {
      SCOPED_TRACE(iter);
      clock_.Advance(absl::Milliseconds(1));
      const int64_t op = Uniform(0, 99);
      if (op < 25) {
        if (live_.size() < 14) {
          ASSERT_NO_FATAL_FAILURE(AddRandom());
        }
      } else if (op < 30) {
        ASSERT_NO_FATAL_FAILURE(CancelRandom());
      } else {
        ASSERT_NO_FATAL_FAILURE(Step(/*allow_failures=*/true));
      }
      ASSERT_NO_FATAL_FAILURE(Check());
      ASSERT_NO_FATAL_FAILURE(CheckNoSharedBlocks());
    }
    // Drain: everything left runs to its end.
    for (int i = 0; i < 20000 && sched_.HasWork(); ++i) {
      ASSERT_NO_FATAL_FAILURE(Step(/*allow_failures=*/false));
    }
    ASSERT_FALSE(sched_.HasWork());
    ASSERT_TRUE(live_.empty());
    // The last finishes are released with the next (empty) step; then the
    // ranks hold nothing.
    const SchedulerOutput last = sched_.Schedule();
    ASSERT_TRUE(last.empty());
    for (uint64_t id : last.released_seq_ids) ranks_.erase(id);
    ASSERT_TRUE(ranks_.empty()) << ranks_.size() << " sequences never released, e.g. "
                                << ranks_.begin()->first;
    ASSERT_EQ(sched_.blocks().num_used(), 0);
    ASSERT_NO_FATAL_FAILURE(Check());
    for (const auto& [id, m] : models_) {
      ASSERT_EQ(m.finishes, 1) << id;
      ASSERT_NE(m.finish, FinishReason::kNone) << id;
    }
    ASSERT_EQ(sched_.num_preemptions(), preempted_);
  }

  ManualClock clock_;
  bool skewed_arrivals_;
  std::mt19937_64 rng_;
  Scheduler sched_;
  std::map<uint64_t, ModelRequest> models_;
  std::set<uint64_t> live_, ended_;
  std::map<uint64_t, RankSeq> ranks_;
  uint64_t next_ = 0, last_step_ = 0;
  int64_t accepted_ = 0, rejected_ = 0, steps_ = 0, preempted_ = 0, requeues_ = 0,
          cancelled_in_flight_ = 0;
  std::map<FinishReason, int64_t> finish_counts_;
};

void RunRandom(bool skewed_arrivals) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(seed);
    RandomRun run(seed, skewed_arrivals);
    ASSERT_NO_FATAL_FAILURE(run.Run(6000));
    // The run exercised what it is meant to.
    EXPECT_GT(run.accepted_, 500);
    EXPECT_GT(run.rejected_, 10);
    EXPECT_GT(run.steps_, 1000);
    EXPECT_GT(run.preempted_, 20);
    EXPECT_GT(run.requeues_, 5);
    EXPECT_GT(run.cancelled_in_flight_, 5);
    EXPECT_GT(run.finish_counts_[FinishReason::kLength], 50);
    EXPECT_GT(run.finish_counts_[FinishReason::kEos], 5);
    EXPECT_GT(run.finish_counts_[FinishReason::kStop], 5);
    EXPECT_GT(run.finish_counts_[FinishReason::kCancelled], 50);
    std::printf(
        "seed %llu: %lld accepted, %lld rejected, %lld steps, %lld preempted, "
        "%lld requeues, %lld cancelled in flight, finishes: length %lld eos %lld "
        "stop %lld cancelled %lld\n",
        static_cast<unsigned long long>(seed), static_cast<long long>(run.accepted_),
        static_cast<long long>(run.rejected_), static_cast<long long>(run.steps_),
        static_cast<long long>(run.preempted_), static_cast<long long>(run.requeues_),
        static_cast<long long>(run.cancelled_in_flight_),
        static_cast<long long>(run.finish_counts_[FinishReason::kLength]),
        static_cast<long long>(run.finish_counts_[FinishReason::kEos]),
        static_cast<long long>(run.finish_counts_[FinishReason::kStop]),
        static_cast<long long>(run.finish_counts_[FinishReason::kCancelled]));
  }
}

TEST(SchedulerRandomTest, ManyOperationsStayConsistent) { RunRandom(/*skewed_arrivals=*/false); }

TEST(SchedulerRandomTest, ManyOperationsWithSkewedArrivalsStayConsistent) {
  RunRandom(/*skewed_arrivals=*/true);
}

// The randomized prefix-cache runs' scheduler: steps of 12 tokens and 6
// sequences, 64-token requests.
SchedulerConfig SmallConfig(int64_t block_size, int64_t num_blocks) {
  SchedulerConfig config;
  config.block_size = block_size;
  config.num_blocks = num_blocks;
  config.max_num_batched_tokens = 12;
  config.max_num_seqs = 6;
  config.max_model_len = 64;
  return config;
}

// What a model of the ranks' KV records for the slot of position end - 1:
// the hash of the token prefix that wrote it.
uint64_t PrefixHash(const Tokens& t, int64_t end) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < end; ++i) h = (h ^ static_cast<uint64_t>(t[i] + 1)) * 1099511628211ull;
  return h;
}

// Prefix caching under random load: requests share a few prompt prefixes;
// a model of the ranks' KV records, for every slot of every block, which
// token prefix wrote it. Every position a sequence attends to (before its
// chunk's start) must hold its own prefix's KV: a cached block reused by a
// sequence with another prefix, or overwritten while shared, fails here.
TEST(SchedulerRandomTest, PrefixSharingNeverServesForeignKv) {
  constexpr int64_t kBs = 4, kBlocks = 24;
  ManualClock clock;
  Scheduler sched(SmallConfig(kBs, kBlocks), &clock);
  std::mt19937_64 rng(11);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const std::vector<Tokens> prefixes = {
      {1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 9, 9, 9, 9}, {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}};
  std::map<uint64_t, Tokens> tokens;  // what each live request's sequence is
  // What each KV slot holds: the hash of the token prefix that wrote it.
  std::map<std::pair<int32_t, int64_t>, uint64_t> kv;
  std::map<uint64_t, std::vector<int32_t>> rank_tables;
  const auto prefix_hash = PrefixHash;
  // The "model": the next token is a function of the whole prefix.
  auto next_token = [&](const Tokens& t) {
    return static_cast<int32_t>(prefix_hash(t, static_cast<int64_t>(t.size())) % 10 + 1);
  };
  uint64_t next_id = 1;
  int64_t steps = 0, hits = 0, requeues = 0, finished = 0;
  for (int op = 0; op < 4000; ++op) {
    const int64_t dice = uniform(0, 99);
    if (dice < 25) {
      auto r = std::make_unique<Request>();
      r->id = next_id++;
      r->prompt = prefixes[uniform(0, 2)];
      for (int64_t i = uniform(0, 6); i > 0; --i)
        r->prompt.push_back(static_cast<int32_t>(uniform(1, 9)));
      r->params.max_tokens = static_cast<uint32_t>(uniform(1, 12));
      r->params.ignore_eos = true;
      r->arrival = clock.Now();
      tokens[r->id] = r->prompt;
      ASSERT_TRUE(sched.AddRequest(std::move(r)).ok());
    } else if (dice < 30 && !tokens.empty()) {
      auto it = tokens.begin();
      std::advance(it, uniform(0, static_cast<int64_t>(tokens.size()) - 1));
      const uint64_t id = it->first;
      sched.FinishRequests({id}, FinishReason::kCancelled);
      tokens.erase(id);
    } else {
      const SchedulerOutput out = sched.Schedule();
      for (uint64_t id : out.released_seq_ids) rank_tables.erase(id);
      if (out.empty()) continue;
      ++steps;
      // What a step may read is what earlier steps wrote: check every
      // sequence before any of this step's writes.
      for (const ScheduledSequence& s : out.sequences) {
        SCOPED_TRACE(s.seq_id);
        std::vector<int32_t>& table = rank_tables[s.seq_id];
        if (s.is_new) table.clear();
        table.insert(table.end(), s.new_block_ids.begin(), s.new_block_ids.end());
        const Tokens& t = tokens.at(s.seq_id);
        if (s.is_new && s.start_position > 0) {
          ASSERT_EQ(s.start_position % kBs, 0);
          hits += s.start_position;
        }
        for (int64_t p = 0; p < s.start_position; ++p) {
          ASSERT_EQ(kv[std::make_pair(table[p / kBs], p % kBs)], prefix_hash(t, p + 1))
              << "position " << p << " of block " << table[p / kBs] << " holds foreign KV";
        }
      }
      std::vector<SampledToken> sampled;
      for (const ScheduledSequence& s : out.sequences) {
        const std::vector<int32_t>& table = rank_tables[s.seq_id];
        const Tokens& t = tokens.at(s.seq_id);
        for (size_t i = 0; i < s.token_ids.size(); ++i) {
          const int64_t p = s.start_position + static_cast<int64_t>(i);
          ASSERT_EQ(s.token_ids[i], t[p]);
          kv[std::make_pair(table[p / kBs], p % kBs)] = prefix_hash(t, p + 1);
        }
        if (s.sample) sampled.push_back({s.seq_id, next_token(t), 0.0f, {}});
      }
      if (uniform(0, 99) < 3) {  // the step fails; the group re-forms
        sched.RequeueAll();
        rank_tables.clear();
        kv.clear();  // a restarted rank has nothing
        ++requeues;
        continue;
      }
      for (const RequestUpdate& u : sched.UpdateFromOutput(out, sampled)) {
        for (int32_t t : u.new_tokens) tokens[u.seq_id].push_back(t);
        if (u.finish != FinishReason::kNone) {
          tokens.erase(u.seq_id);
          ++finished;
        }
      }
    }
    ASSERT_TRUE(sched.CheckConsistency().ok()) << sched.CheckConsistency();
  }
  // Drain: everything ends, and only evictable cached blocks stay.
  for (int i = 0; i < 10000 && sched.HasWork(); ++i) {
    const SchedulerOutput out = sched.Schedule();
    std::vector<SampledToken> sampled;
    for (const ScheduledSequence& s : out.sequences) {
      if (s.sample) sampled.push_back({s.seq_id, 1, 0.0f, {}});
    }
    sched.UpdateFromOutput(out, sampled);
  }
  EXPECT_FALSE(sched.HasWork());
  EXPECT_EQ(sched.blocks().num_used(), 0);
  EXPECT_TRUE(sched.blocks().CheckConsistency().ok());
  EXPECT_GT(hits, 200) << "too few prefix hits to mean anything";
  EXPECT_EQ(sched.cached_tokens(), hits);
  EXPECT_GT(requeues, 10);
  EXPECT_GT(finished, 200);
  std::printf("prefix sharing: %lld steps, %lld cached tokens, %lld requeues, %lld finished\n",
              static_cast<long long>(steps), static_cast<long long>(hits),
              static_cast<long long>(requeues), static_cast<long long>(finished));
}

// Planning ahead: each step is scheduled while the previous one's results
// are not in yet (the router's overlap with the running step), under random
// load with prefix caching, preemption, cancellation, EOS found a step late
// and failed steps. A model of the ranks executes the steps in the order
// they were sent: it resolves every kPendingToken to the token its leader
// sampled for that sequence in the step before, checks that each position
// read holds its own prefix's KV, and the router's tokens are exactly the
// ranks' (a token sampled past a sequence's end is never delivered).
TEST(SchedulerRandomTest, PlanningAheadOfResultsKeepsTheRanksAndTheRouterAgreeing) {
  constexpr int64_t kBs = 4, kBlocks = 16;
  constexpr int32_t kEos = 7;
  ManualClock clock;
  Scheduler sched(SmallConfig(kBs, kBlocks), &clock);
  std::mt19937_64 rng(5);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const std::vector<Tokens> prefixes = {{1, 2, 3, 4, 5, 6, 8, 9}, {5, 5, 5, 5, 5, 5, 5, 5, 5}};
  const auto prefix_hash = PrefixHash;
  // The "model": the next token is a function of the whole prefix, so a
  // sequence recomputed after a preemption samples the same tokens.
  auto next_token = [&](const Tokens& t, int64_t end) {
    return static_cast<int32_t>(prefix_hash(t, end) % 10 + 1);
  };
  std::map<uint64_t, Tokens> truth;      // prompt, then every token the leader sampled
  std::map<uint64_t, size_t> prompt_of;  // prompt lengths
  std::map<uint64_t, Tokens> delivered;  // what the router handed out, per request
  std::set<uint64_t> live;
  // The ranks: block tables, what each KV slot holds, and the leader's
  // last sampled token per sequence (with the step it came from).
  std::map<uint64_t, std::vector<int32_t>> tables;
  std::map<std::pair<int32_t, int64_t>, uint64_t> kv;
  std::map<uint64_t, std::pair<uint64_t, int32_t>> last_sampled;
  uint64_t last_step = 0;
  struct Sent {
    SchedulerOutput out;
    std::vector<SampledToken> sampled;
  };
  std::optional<Sent> in_flight;
  int64_t steps = 0, pending = 0, dropped = 0, hits = 0, failures = 0, eos = 0;
  const int64_t preemptions_before = sched.num_preemptions();

  // The ranks run a step: releases first, then every sequence.
  auto execute = [&](const SchedulerOutput& out) -> std::vector<SampledToken> {
    for (uint64_t id : out.released_seq_ids) {
      tables.erase(id);
      last_sampled.erase(id);
    }
    std::vector<SampledToken> sampled;
    if (out.empty()) return sampled;
    for (const ScheduledSequence& q : out.sequences) {
      SCOPED_TRACE(q.seq_id);
      std::vector<int32_t>& table = tables[q.seq_id];
      if (q.is_new) table.clear();
      table.insert(table.end(), q.new_block_ids.begin(), q.new_block_ids.end());
      Tokens& t = truth.at(q.seq_id);
      if (q.is_new && q.start_position > 0) hits += q.start_position;
      for (int64_t p = 0; p < q.start_position; ++p) {
        EXPECT_EQ(kv[std::make_pair(table[p / kBs], p % kBs)], prefix_hash(t, p + 1))
            << "position " << p << " holds foreign KV";
      }
      for (size_t i = 0; i < q.token_ids.size(); ++i) {
        const int64_t p = q.start_position + static_cast<int64_t>(i);
        int32_t token = q.token_ids[i];
        if (token == kPendingToken) {
          // Only a decode's one input, sampled by the step just before.
          EXPECT_EQ(q.token_ids.size(), 1u);
          auto it = last_sampled.find(q.seq_id);
          EXPECT_TRUE(it != last_sampled.end() && it->second.first == last_step);
          token = it == last_sampled.end() ? -2 : it->second.second;
          ++pending;
        }
        EXPECT_LT(p, static_cast<int64_t>(t.size()));
        if (p < static_cast<int64_t>(t.size())) {
          EXPECT_EQ(token, t[p]) << "position " << p;
        }
        kv[std::make_pair(table[p / kBs], p % kBs)] = prefix_hash(t, p + 1);
      }
      if (q.sample) {
        const int64_t end = q.start_position + static_cast<int64_t>(q.token_ids.size());
        const int32_t token = next_token(t, end);
        if (static_cast<int64_t>(t.size()) == end) t.push_back(token);
        EXPECT_EQ(t[end], token);
        last_sampled[q.seq_id] = {out.step_id, token};
        sampled.push_back({q.seq_id, token, 0.0f, {}});
      }
    }
    last_step = out.step_id;
    return sampled;
  };
  auto apply = [&](const Sent& sent) {
    std::set<uint64_t> updated;
    for (const RequestUpdate& u : sched.UpdateFromOutput(sent.out, sent.sampled)) {
      updated.insert(u.seq_id);
      Tokens& got = delivered[u.seq_id];
      for (int32_t token : u.new_tokens) {
        const size_t at = prompt_of[u.seq_id] + got.size();
        ASSERT_LT(at, truth[u.seq_id].size());
        EXPECT_EQ(token, truth[u.seq_id][at]);
        got.push_back(token);
      }
      if (u.finish == FinishReason::kEos) ++eos;
      if (u.finish != FinishReason::kNone) live.erase(u.seq_id);
    }
    // Tokens of sequences that ended (or were preempted) before their
    // step's results came.
    for (const SampledToken& t : sent.sampled) {
      if (!updated.count(t.seq_id)) ++dropped;
    }
  };

  uint64_t next_id = 1;
  for (int op = 0; op < 5000; ++op) {
    const int64_t dice = uniform(0, 99);
    if (dice < 22) {
      auto r = std::make_unique<Request>();
      r->id = next_id++;
      r->prompt = prefixes[uniform(0, 1)];
      for (int64_t i = uniform(0, 5); i > 0; --i) {
        r->prompt.push_back(static_cast<int32_t>(uniform(1, 9)));
      }
      r->params.max_tokens = static_cast<uint32_t>(uniform(1, 30));
      r->params.eos_token_ids = {kEos};
      r->params.ignore_eos = uniform(0, 1) == 0;
      r->arrival = clock.Now();
      truth[r->id] = r->prompt;
      prompt_of[r->id] = r->prompt.size();
      live.insert(r->id);
      ASSERT_TRUE(sched.AddRequest(std::move(r)).ok());
    } else if (dice < 26 && !live.empty()) {
      auto it = live.begin();
      std::advance(it, uniform(0, static_cast<int64_t>(live.size()) - 1));
      const uint64_t id = *it;
      sched.FinishRequests({id}, FinishReason::kCancelled);
      live.erase(id);
    } else {
      // Plan the next step while the one in flight runs, then take the
      // results of the one in flight.
      const SchedulerOutput out = sched.Schedule();
      std::vector<SampledToken> sampled = execute(out);
      if (!out.empty()) ++steps;
      if (uniform(0, 99) < 2) {  // a step fails: both are lost, the group re-forms
        sched.RequeueAll();
        tables.clear();
        kv.clear();
        last_sampled.clear();
        in_flight.reset();
        ++failures;
      } else {
        if (in_flight) {
          ASSERT_NO_FATAL_FAILURE(apply(*in_flight));
        }
        in_flight.reset();
        if (!out.empty()) in_flight = Sent{out, std::move(sampled)};
      }
    }
    const absl::Status consistent = sched.CheckConsistency();
    ASSERT_TRUE(consistent.ok()) << consistent;
  }
  // Drain the same way.
  for (int i = 0; i < 10000 && (sched.HasWork() || in_flight); ++i) {
    const SchedulerOutput out = sched.Schedule();
    std::vector<SampledToken> sampled = execute(out);
    if (in_flight) {
      ASSERT_NO_FATAL_FAILURE(apply(*in_flight));
    }
    in_flight.reset();
    if (!out.empty()) in_flight = Sent{out, std::move(sampled)};
  }
  EXPECT_FALSE(sched.HasWork());
  EXPECT_EQ(sched.blocks().num_used(), 0);
  EXPECT_TRUE(sched.blocks().CheckConsistency().ok());
  // The run exercised what it is meant to.
  EXPECT_GT(steps, 1000);
  EXPECT_GT(pending, 1000) << "decodes of pending tokens";
  EXPECT_GT(dropped, 20) << "tokens sampled past a sequence's end";
  EXPECT_GT(eos, 20);
  EXPECT_GT(hits, 100) << "prefix-cache hits";
  EXPECT_GT(sched.num_preemptions() - preemptions_before, 20);
  EXPECT_GT(failures, 10);
  std::printf(
      "planning ahead: %lld steps, %lld pending inputs, %lld tokens dropped, %lld eos, %lld cached "
      "tokens, %lld preemptions, %lld failures\n",
      static_cast<long long>(steps), static_cast<long long>(pending),
      static_cast<long long>(dropped), static_cast<long long>(eos), static_cast<long long>(hits),
      static_cast<long long>(sched.num_preemptions() - preemptions_before),
      static_cast<long long>(failures));
}

}  // namespace
}  // namespace shift
