// A recorded single-rank engine run that group tests replay: three
// sequences of different lengths, prefill in chunks of several sizes mixed
// with decodes, then decodes; one sequence samples at temperature 0.9.
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

inline Recording RecordSingleRank(const ModelFiles& files) {
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
  for (auto [id, len] : {std::pair<uint64_t, int>{1, 13}, {2, 5}, {3, 21}}) {
    for (int i = 0; i < len; ++i) seqs[id].tokens.push_back(static_cast<int32_t>(rng() % 900));
  }
  seqs[3].sampling = {0.9f, 0.95f, 20, 7};
  int32_t next_block = 0;
  Recording rec;
  const std::vector<std::vector<std::pair<uint64_t, int64_t>>> plans = {{{1, 6}, {2, 5}},
                                                                        {{2, 1}, {1, 7}, {3, 1}},
                                                                        {{1, 1}, {2, 1}, {3, 11}},
                                                                        {{3, 9}, {1, 1}},
                                                                        {{1, 1}, {2, 1}, {3, 1}},
                                                                        {{1, 1}, {2, 1}, {3, 1}},
                                                                        {{3, 1}},
                                                                        {{1, 1}, {2, 1}, {3, 1}},
                                                                        {{2, 1}, {3, 1}},
                                                                        {{1, 1}, {2, 1}, {3, 1}}};
  for (const auto& plan : plans) {
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
