// Sweeps the step size N for TP and SP on a group of 2 ranks (threads, Gloo
// over TCP on 127.0.0.1) with a mid-size generated model: step time and
// bytes sent per rank, next to the per-layer traffic formulas. Shows where,
// or whether, the modes cross on this CPU. A benchmark, not a test.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "gloo/rendezvous/hash_store.h"
#include "tools/mkmodel.h"
#include "worker/engine.h"
#include "worker/gloo_communicator.h"

namespace shift {
namespace {

constexpr int kRanks = 2;
constexpr int kRepeats = 3;

struct Row {
  double ms[2];
  double bytes[2];
};

int Main() {
  const auto dir = std::filesystem::temp_directory_path() / "shift_mode_bench_model";
  MkModelOptions model;
  model.config = *PresetConfig("tiny");
  ModelConfig& c = model.config;
  c.hidden_size = 512;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.intermediate_size = 1536;
  c.vocab_size = 4096;
  c.max_position_embeddings = 4096;
  if (auto written = WriteRandomModel(dir.string(), model); !written.ok()) {
    std::fprintf(stderr, "%s\n", std::string(written.status().message()).c_str());
    return 1;
  }
  const std::vector<int64_t> sizes = {1, 4, 16, 64, 128, 256, 512, 1024, 2048};
  std::vector<Row> rows(sizes.size());
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      auto files = OpenModelFiles(dir.string());
      auto comm = GlooCommunicator::Connect(store, "bench", r, kRanks, "127.0.0.1",
                                            std::chrono::milliseconds(30000));
      EngineOptions options;
      options.kv_cache_bytes = 256 << 20;
      options.threads = 1;  // one core per rank
      auto engine = Engine::Create(*files, options, comm->get());
      if (!files.ok() || !comm.ok() || !engine.ok()) std::abort();
      for (size_t i = 0; i < sizes.size(); ++i) {
        SequenceStep step;
        step.seq_id = 1;
        for (int64_t t = 0; t < sizes[i]; ++t)
          step.token_ids.push_back(static_cast<int32_t>(t % 900));
        for (int64_t b = 0; b * 16 < sizes[i]; ++b)
          step.block_table.push_back(static_cast<int32_t>(b));
        step.sample = true;
        for (int mode = 0; mode < 2; ++mode) {
          std::vector<double> times;
          uint64_t sent = 0;
          for (int k = 0; k < kRepeats; ++k) {
            const uint64_t before = (*comm)->bytes_sent();
            const auto start = std::chrono::steady_clock::now();
            auto out = (*engine)->Step(
                {step}, mode ? StepMode::kSequenceParallel : StepMode::kTensorParallel);
            times.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count());
            if (!out.ok()) std::abort();
            sent = (*comm)->bytes_sent() - before;
          }
          std::sort(times.begin(), times.end());
          if (r == 0) {
            rows[i].ms[mode] = times[kRepeats / 2];
            rows[i].bytes[mode] = static_cast<double>(sent);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::filesystem::remove_all(dir);

  const double p = kRanks, d = c.hidden_size, kv = c.num_key_value_heads * c.head_dim,
               layers = c.num_hidden_layers;
  std::printf(
      "P=%d, hidden %lld, %lld layers, %lld/%lld heads x %lld, intermediate %lld; "
      "median of %d, ms per step; bytes sent by rank 0 per step\n",
      kRanks, static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_hidden_layers),
      static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.num_key_value_heads),
      static_cast<long long>(c.head_dim), static_cast<long long>(c.intermediate_size), kRepeats);
  std::printf("| N | TP ms | SP ms | faster | TP bytes | TP formula | SP bytes | SP formula |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double n = static_cast<double>(sizes[i]);
    // Per layer and rank: TP 4(P-1)/P·N·D, SP (P-1)/P²·N·(2D + 2·Hkv·d)
    // elements (layers only; the logits gather comes on top).
    const double tp = 4 * (p - 1) / p * n * d * layers * 4;
    const double sp = (p - 1) / (p * p) * n * (2 * d + 2 * kv) * layers * 4;
    std::printf("| %lld | %.2f | %.2f | %s | %.0f | %.0f | %.0f | %.0f |\n",
                static_cast<long long>(sizes[i]), rows[i].ms[0], rows[i].ms[1],
                rows[i].ms[0] <= rows[i].ms[1] ? "TP" : "SP", rows[i].bytes[0], tp,
                rows[i].bytes[1], sp);
  }
  return 0;
}

}  // namespace
}  // namespace shift

int main() { return shift::Main(); }
