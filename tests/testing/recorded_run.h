// A recorded single-rank engine run that group tests replay: three
// sequences of different lengths, prefill in chunks of several sizes mixed
// with decodes, then decodes; one sequence samples at temperature 0.9.
// Short prompts, or long ones (for sliding windows).
#pragma once

#include <map>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine.h"

namespace shift::testing {

inline EngineOptions Options() {
  EngineOptions options;
  options.kv_cache_bytes = 8 << 20;
  options.block_size = 4;
  return options;
}

struct Recording {
  std::vector<std::vector<SequenceStep>> steps;
  std::vector<std::vector<EngineSample>> outputs;
};

// Which sequences a recording runs (id, prompt length), and each step's
// (id, tokens) chunks.
struct Schedule {
  std::vector<std::pair<uint64_t, int>> prompts;
  std::vector<std::vector<std::pair<uint64_t, int64_t>>> plans;
};

// Prompts of 13, 5 and 21 tokens: prefill in chunks of several sizes mixed
// with decodes (steps 0-3), then decodes.
inline Schedule ShortPrompts() {
  return {{{1, 13}, {2, 5}, {3, 21}},
          {{{1, 6}, {2, 5}},
           {{2, 1}, {1, 7}, {3, 1}},
           {{1, 1}, {2, 1}, {3, 11}},
           {{3, 9}, {1, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{3, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{2, 1}, {3, 1}},
           {{1, 1}, {2, 1}, {3, 1}}}};
}

// Prompts of 100, 100 and 37 tokens in chunks of 1 to 60 (steps 0-3, two
// decodes among them), then decodes: long enough for a 16-token sliding
// window to drop most of each prompt, with chunks straddling its edge.
inline Schedule LongPrompts() {
  return {{{1, 100}, {2, 100}, {3, 37}},
          {{{1, 30}, {2, 5}},
           {{1, 16}, {2, 60}, {3, 1}},
           {{1, 54}, {2, 35}, {3, 20}},
           {{3, 16}, {1, 1}, {2, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{3, 1}},
           {{1, 1}, {2, 1}, {3, 1}},
           {{2, 1}, {3, 1}},
           {{1, 1}, {2, 1}, {3, 1}}}};
}

inline Recording RecordSingleRank(const ModelFiles& files,
                                  const Schedule& schedule = ShortPrompts()) {
  auto engine = Engine::Create(files, Options());
  EXPECT_TRUE(engine.ok()) << engine.status();
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t done = 0;
    std::vector<int32_t> blocks;
    kernels::SamplingParams sampling;
  };
  std::map<uint64_t, Seq> seqs;
  std::mt19937 rng(4);
  for (auto [id, len] : schedule.prompts) {
    for (int i = 0; i < len; ++i) seqs[id].tokens.push_back(static_cast<int32_t>(rng() % 900));
  }
  seqs[3].sampling = {0.9f, 0.95f, 20, 7};
  int32_t next_block = 0;
  Recording rec;
  for (const auto& plan : schedule.plans) {
    std::vector<SequenceStep> batch;
    for (auto [id, count] : plan) {
      Seq& s = seqs[id];
      SequenceStep step;
      step.seq_id = id;
      step.start_position = s.done;
      step.token_ids.assign(s.tokens.begin() + s.done, s.tokens.begin() + s.done + count);
      while (static_cast<int64_t>(s.blocks.size()) * 4 < s.done + count) {
        s.blocks.push_back(next_block++);
      }
      step.block_table = s.blocks;
      step.sample = s.done + count == static_cast<int64_t>(s.tokens.size());
      step.sampling = s.sampling;
      step.return_logits = true;
      s.done += count;
      batch.push_back(step);
    }
    auto out = (*engine)->Step(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    for (const EngineSample& t : *out) seqs[t.seq_id].tokens.push_back(t.token_id);
    rec.steps.push_back(batch);
    rec.outputs.push_back(*out);
  }
  return rec;
}

}  // namespace shift::testing
