// What the weights digest costs: HashBytes over memory (one thread), and
// ModelWeightsDigest (what shift-inspect --weights_digest runs; a rank
// digests its share the same way as it loads) over a generated checkpoint on
// 1..N threads (the files in the page cache, as right after a load). Scale by bytes to a model's
// size: an 8B model in bf16 is 16.06 GB.
//   build/tests/bench/fingerprint_bench [--model=DIR]
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/fingerprint.h"

namespace {

std::string model_dir;

void BM_HashBytes(benchmark::State& state) {
  std::vector<unsigned char> data(size_t{256} << 20, 0x5A);
  for (auto _ : state) {
    benchmark::DoNotOptimize(shift::HashBytes(data.data(), data.size(), 0));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * data.size()));
}
BENCHMARK(BM_HashBytes)->Unit(benchmark::kMillisecond);

void BM_ModelWeightsDigest(benchmark::State& state) {
  if (model_dir.empty()) {
    state.SkipWithError("pass --model=DIR (a shift-mkmodel checkpoint)");
    return;
  }
  auto checkpoint = shift::Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) {
    state.SkipWithError(std::string(checkpoint.status().message()).c_str());
    return;
  }
  // Each iteration maps the files afresh, as a starting router or rank does.
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        shift::ModelWeightsDigest(model_dir, static_cast<int>(state.range(0))));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (*checkpoint)->TotalBytes()));
}
BENCHMARK(BM_ModelWeightsDigest)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--model=", 0) == 0) {
      model_dir = arg.substr(8);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
