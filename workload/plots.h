// The report's plots: data files and a gnuplot script in a directory, then
// PNGs drawn by gnuplot: TTFT and end-to-end latency CDFs, throughput and
// TTFT over time, and the server's mode over time.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "workload/workload.h"

namespace shift::workload {

// The router's step counters at one moment of the run.
struct ModeSample {
  double t = 0;  // seconds from the start
  double tp_steps = 0, sp_steps = 0;
};

// Writes `dir`/{*.dat, plots.gp} and runs gnuplot on it (PNG files next to
// them). `title` heads every plot. An error says what failed; the data files
// are written first, so they stay even without gnuplot.
absl::Status WritePlots(const std::string& dir, const std::string& title,
                        const std::vector<Outcome>& outcomes, const std::vector<ModeSample>& modes);

// Runs gnuplot (no shell) on `script`, a file in `dir`, from `dir`; its
// output goes to `dir`/gnuplot.log. The error says whether gnuplot is missing
// or failed.
absl::Status RunGnuplot(const std::string& dir, const std::string& script);

}  // namespace shift::workload
