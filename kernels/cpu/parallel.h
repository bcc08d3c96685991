// Splits [0, count) into `workers` contiguous ranges run on that many
// threads (the caller's included). Which thread computes an item never
// changes its bits: kernels reduce within an item, never across items.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

namespace shift::kernels::cpu {

template <typename Fn>  // Fn(int64_t begin, int64_t end)
void ParallelFor(int64_t count, int64_t workers, const Fn& fn) {
  if (workers > count) workers = count;
  if (workers <= 1) {
    if (count > 0) fn(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < workers; ++t) {
    pool.emplace_back(
        [&fn, count, workers, t] { fn(count * t / workers, count * (t + 1) / workers); });
  }
  fn(0, count / workers);
  for (std::thread& thread : pool) thread.join();
}

}  // namespace shift::kernels::cpu
