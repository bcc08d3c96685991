// Our deterministic GEMM next to OpenBLAS sgemm on the same shapes
// (y[M][N] = x[M][K] · W[N][K]ᵀ), one and two threads. Reports GFLOP/s.
#include <cblas.h>

#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/gemm.h"

namespace shift::kernels::cpu {
namespace {

std::vector<float> Random(size_t n) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

void SetFlops(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

// Args: M, N, K, threads.
void BM_ShiftGemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const auto x = Random(m * k), w = Random(n * k);
  const PackedWeight packed = PackedWeight::Pack(w.data(), n, k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    Gemm(x.data(), m, k, packed, {}, y.data(), n, threads);
    benchmark::DoNotOptimize(y.data());
  }
  SetFlops(state, m, n, k);
}

void BM_OpenBlasSgemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  openblas_set_num_threads(static_cast<int>(state.range(3)));
  const auto x = Random(m * k), w = Random(n * k);
  std::vector<float> y(m * n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.data(), k, w.data(), k,
                0.0f, y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  SetFlops(state, m, n, k);
}

void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "threads"});
  for (int threads : {1, 2}) {
    for (int64_t m : {1, 16, 256}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{2048, 2048}, {4096, 4096}, {4096, 2048}}) {
        b->Args({m, n, k, threads});
      }
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_ShiftGemm)->Apply(Shapes);
BENCHMARK(BM_OpenBlasSgemm)->Apply(Shapes);

}  // namespace
}  // namespace shift::kernels::cpu

BENCHMARK_MAIN();
