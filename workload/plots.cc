#include "workload/plots.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "common/subprocess.h"

namespace shift::workload {
namespace {

void WriteCdf(const std::string& path, std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::ofstream out(path);
  for (size_t i = 0; i < values.size(); ++i) {
    out << 1000 * values[i] << " " << static_cast<double>(i + 1) / values.size() << "\n";
  }
}

// `text` as a gnuplot string literal: single-quoted (no escapes), a quote
// doubled.
std::string GnuplotString(const std::string& text) {
  return absl::StrCat("'", absl::StrReplaceAll(text, {{"'", "''"}}), "'");
}

}  // namespace

absl::Status WritePlots(const std::string& dir, const std::string& title,
                        const std::vector<Outcome>& outcomes,
                        const std::vector<ModeSample>& modes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  std::vector<double> ttft, e2e;
  // Per 1-second bin: tokens received, and TTFTs of requests started then.
  std::map<int64_t, double> tokens;
  std::map<int64_t, std::vector<double>> ttft_by_start;
  for (const Outcome& o : outcomes) {
    if (o.code != "OK") continue;
    e2e.push_back(o.e2e);
    if (o.ttft >= 0) {
      ttft.push_back(o.ttft);
      ttft_by_start[static_cast<int64_t>(o.start)].push_back(o.ttft);
    }
    for (double t : o.token_times) tokens[static_cast<int64_t>(t)] += 1;
  }
  WriteCdf(dir + "/ttft_cdf.dat", ttft);
  WriteCdf(dir + "/e2e_cdf.dat", e2e);
  {
    std::ofstream out(dir + "/timeline.dat");
    int64_t last = 0;
    if (!tokens.empty()) last = tokens.rbegin()->first;
    if (!ttft_by_start.empty()) last = std::max(last, ttft_by_start.rbegin()->first);
    for (int64_t s = 0; s <= last; ++s) {
      double mean = NAN;
      if (auto it = ttft_by_start.find(s); it != ttft_by_start.end()) {
        double sum = 0;
        for (double v : it->second) sum += v;
        mean = 1000 * sum / it->second.size();
      }
      out << s + 0.5 << " " << (tokens.count(s) ? tokens[s] : 0.0) << " ";
      if (std::isnan(mean)) {
        out << "NaN\n";
      } else {
        out << mean << "\n";
      }
    }
  }
  {
    // Steps per second in each mode between consecutive samples.
    std::ofstream out(dir + "/modes.dat");
    for (size_t i = 1; i < modes.size(); ++i) {
      const double dt = modes[i].t - modes[i - 1].t;
      if (dt <= 0) continue;
      out << (modes[i].t + modes[i - 1].t) / 2 << " "
          << (modes[i].tp_steps - modes[i - 1].tp_steps) / dt << " "
          << (modes[i].sp_steps - modes[i - 1].sp_steps) / dt << "\n";
    }
  }
  {
    std::ofstream gp(dir + "/plots.gp");
    gp << "set terminal pngcairo size 900,500\nset grid\nset key bottom right\n"
       << "set title " << GnuplotString(title) << "\n"
       << "set output 'latency_cdf.png'\nset xlabel 'ms'\nset ylabel 'fraction of requests'\n"
       << "set logscale x\n"
       << "plot 'ttft_cdf.dat' using 1:2 with lines lw 2 title 'TTFT', "
          "'e2e_cdf.dat' using 1:2 with lines lw 2 title 'end to end'\n"
       << "unset logscale x\nset key top right\n"
       << "set output 'throughput.png'\nset xlabel 'seconds'\nset ylabel 'tokens/s'\n"
       << "plot 'timeline.dat' using 1:2 with steps lw 2 title 'generated tokens/s'\n"
       << "set output 'ttft_over_time.png'\nset ylabel 'mean TTFT (ms), by start second'\n"
       << "plot 'timeline.dat' using 1:3 with linespoints title 'TTFT'\n"
       << "set output 'modes.png'\nset ylabel 'steps/s'\n"
       // With fewer than two samples there is no rate: an empty plot.
       << (modes.size() < 2 ? "set xrange [0:1]\nplot NaN title 'no mode samples'\n"
                            : "plot 'modes.dat' using 1:2 with lines lw 2 title 'TP steps/s', "
                              "'modes.dat' using 1:3 with lines lw 2 title 'SP steps/s'\n");
  }
  return RunGnuplot(dir, "plots.gp");
}

absl::Status RunGnuplot(const std::string& dir, const std::string& script) {
  const std::string log = dir + "/gnuplot.log";
  absl::StatusOr<Subprocess> gnuplot = Subprocess::Start({"gnuplot", script}, log, dir);
  if (!gnuplot.ok()) {
    if (absl::IsNotFound(gnuplot.status())) {
      return absl::UnavailableError(absl::StrCat(
          "gnuplot is not installed (not found on PATH); the data files are in ", dir));
    }
    return absl::UnavailableError(
        absl::StrCat(gnuplot.status().message(), "; the data files are in ", dir));
  }
  SHIFT_ASSIGN_OR_RETURN(const int code, gnuplot->Wait());
  if (code != 0) {
    return absl::UnavailableError(absl::StrCat("gnuplot failed (",
                                               code < 0 ? "signal " : "exit code ", std::abs(code),
                                               "; see ", log, "); the data files are in ", dir));
  }
  return absl::OkStatus();
}

}  // namespace shift::workload
