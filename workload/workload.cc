#include "workload/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace shift::workload {
namespace {

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

absl::Status LineError(const std::string& path, int64_t line, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", why));
}

// Reads `path` line by line; `row` turns a line (1-based number) into a row.
template <typename Fn>
absl::StatusOr<std::vector<TraceRow>> ReadLines(const std::string& path, int64_t limit, bool header,
                                                Fn&& row) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open trace ", path));
  std::vector<TraceRow> rows;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (header && number == 1) continue;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty()) continue;
    absl::StatusOr<TraceRow> parsed = row(text, number);
    if (!parsed.ok()) return parsed.status();
    rows.push_back(*std::move(parsed));
    if (limit > 0 && static_cast<int64_t>(rows.size()) >= limit) break;
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no requests"));
  const double first = rows.front().at;
  for (TraceRow& r : rows) r.at -= first;
  return rows;
}

}  // namespace

std::vector<double> PoissonArrivals(double rate, double duration, uint64_t seed) {
  std::vector<double> times;
  if (rate <= 0) return times;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate);
  for (double t = gap(rng); t < duration; t += gap(rng)) times.push_back(t);
  return times;
}

std::vector<double> BurstArrivals(double on_rate, double off_rate, double on, double off,
                                  double duration, uint64_t seed) {
  std::vector<double> times;
  std::mt19937_64 rng(seed);
  double t = 0;
  for (bool burst = true; t < duration; burst = !burst) {
    const double rate = burst ? on_rate : off_rate;
    const double end = std::min(duration, t + (burst ? on : off));
    if (rate > 0) {
      std::exponential_distribution<double> gap(rate);
      for (double s = t + gap(rng); s < end; s += gap(rng)) times.push_back(s);
    }
    t = end;
    if (on <= 0 && off <= 0) break;
  }
  return times;
}

absl::StatusOr<std::vector<TraceRow>> ReadAzureTrace(const std::string& path, int64_t limit) {
  return ReadLines(
      path, limit, /*header=*/true,
      [&](absl::string_view text, int64_t number) -> absl::StatusOr<TraceRow> {
        std::vector<absl::string_view> f = absl::StrSplit(text, ',');
        TraceRow row;
        absl::Time when;
        std::string error;
        if (f.size() != 3) {
          return LineError(path, number, "want TIMESTAMP,ContextTokens,GeneratedTokens");
        }
        if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S", std::string(f[0]), absl::UTCTimeZone(), &when,
                             &error)) {
          return LineError(path, number, absl::StrCat("bad timestamp \"", f[0], "\": ", error));
        }
        if (!absl::SimpleAtoi(f[1], &row.input_tokens) || row.input_tokens < 0 ||
            !absl::SimpleAtoi(f[2], &row.output_tokens) || row.output_tokens < 0) {
          return LineError(path, number, "token counts must be whole numbers >= 0");
        }
        row.at = absl::ToDoubleSeconds(when - absl::UnixEpoch());
        return row;
      });
}

absl::StatusOr<std::vector<TraceRow>> ReadMooncakeTrace(const std::string& path, int64_t limit) {
  return ReadLines(
      path, limit, /*header=*/false,
      [&](absl::string_view text, int64_t number) -> absl::StatusOr<TraceRow> {
        nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) return LineError(path, number, "not a JSON object");
        TraceRow row;
        auto number_field = [&](const char* name, auto* out) -> absl::Status {
          auto it = j.find(name);
          if (it == j.end() || !it->is_number() || it->template get<double>() < 0) {
            return LineError(path, number, absl::StrCat("\"", name, "\" must be a number >= 0"));
          }
          *out = it->template get<std::remove_pointer_t<decltype(out)>>();
          return absl::OkStatus();
        };
        double ms = 0;
        if (auto s = number_field("timestamp", &ms); !s.ok()) return s;
        if (auto s = number_field("input_length", &row.input_tokens); !s.ok()) return s;
        if (auto s = number_field("output_length", &row.output_tokens); !s.ok()) return s;
        row.at = ms / 1000.0;
        auto ids = j.find("hash_ids");
        if (ids != j.end()) {
          if (!ids->is_array()) return LineError(path, number, "\"hash_ids\" must be an array");
          for (const auto& id : *ids) {
            if (!id.is_number_integer()) {
              return LineError(path, number, "\"hash_ids\" must hold integers");
            }
            row.hash_ids.push_back(id.get<int64_t>());
          }
        }
        return row;
      });
}

absl::StatusOr<std::vector<TraceRow>> ReadTrace(const std::string& path, int64_t limit) {
  if (absl::EndsWith(path, ".csv")) return ReadAzureTrace(path, limit);
  if (absl::EndsWith(path, ".jsonl")) return ReadMooncakeTrace(path, limit);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": a trace is .csv (Azure format) or .jsonl (Mooncake format)"));
}

std::vector<int32_t> PromptMaker::Random(int64_t length, uint64_t index) const {
  // The length is part of the key, so prompts of other lengths share no
  // prefix by accident.
  std::mt19937_64 rng(Mix(seed_, Mix(index + 0x5EED, static_cast<uint64_t>(length))));
  std::uniform_int_distribution<int32_t> id(lo_, hi_ - 1);
  std::vector<int32_t> out(std::max<int64_t>(length, 0));
  for (int32_t& t : out) t = id(rng);
  return out;
}

std::vector<int32_t> PromptMaker::FromBlocks(const std::vector<int64_t>& hash_ids, int64_t length,
                                             uint64_t index) const {
  std::vector<int32_t> out;
  out.reserve(std::max<int64_t>(length, 0));
  std::uniform_int_distribution<int32_t> id(lo_, hi_ - 1);
  for (int64_t h : hash_ids) {
    if (static_cast<int64_t>(out.size()) >= length) break;
    std::mt19937_64 rng(Mix(seed_, static_cast<uint64_t>(h)));
    for (int64_t i = 0; i < block_tokens_ && static_cast<int64_t>(out.size()) < length; ++i) {
      out.push_back(id(rng));
    }
  }
  const std::vector<int32_t> rest = Random(length - static_cast<int64_t>(out.size()), index);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<Request> FromTrace(const std::vector<TraceRow>& rows, const PromptMaker& maker,
                               double time_scale, double length_scale, int64_t max_prompt,
                               int64_t max_output) {
  std::vector<Request> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const TraceRow& row = rows[i];
    const int64_t prompt = std::clamp<int64_t>(
        static_cast<int64_t>(std::llround(row.input_tokens / length_scale)), 1, max_prompt);
    const int64_t output = std::clamp<int64_t>(
        static_cast<int64_t>(std::llround(row.output_tokens / length_scale)), 1, max_output);
    Request r;
    r.at = row.at / time_scale;
    r.prompt =
        row.hash_ids.empty() ? maker.Random(prompt, i) : maker.FromBlocks(row.hash_ids, prompt, i);
    r.max_tokens = static_cast<uint32_t>(output);
    out.push_back(std::move(r));
  }
  return out;
}

Stats Summarize(std::vector<double> values) {
  Stats s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / values.size();
  auto at = [&](double p) {
    // Nearest rank.
    const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
    return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  s.p50 = at(50);
  s.p90 = at(90);
  s.p99 = at(99);
  return s;
}

Report MakeReport(const std::vector<Outcome>& outcomes, double ttft_limit, double tpot_limit) {
  Report r;
  r.requests = static_cast<int64_t>(outcomes.size());
  r.ttft_limit = ttft_limit;
  r.tpot_limit = tpot_limit;
  std::map<std::string, int64_t> failures;
  std::vector<double> ttft, tpot, itl, e2e;
  double first = 1e300, last = 0;
  int64_t good = 0;
  for (const Outcome& o : outcomes) {
    first = std::min(first, o.start);
    last = std::max(last, o.start + o.e2e);
    if (o.code != "OK") {
      ++failures[o.code];
      continue;
    }
    ++r.completed;
    r.prompt_tokens += o.prompt_tokens;
    r.output_tokens += o.output_tokens;
    r.cached_tokens += o.cached_tokens;
    e2e.push_back(o.e2e);
    if (o.ttft >= 0) ttft.push_back(o.ttft);
    double request_tpot = 0;
    if (o.output_tokens > 1 && o.ttft >= 0) {
      request_tpot = (o.e2e - o.ttft) / (o.output_tokens - 1);
      tpot.push_back(request_tpot);
    }
    for (size_t i = 1; i < o.token_times.size(); ++i) {
      itl.push_back(o.token_times[i] - o.token_times[i - 1]);
    }
    if ((ttft_limit <= 0 || (o.ttft >= 0 && o.ttft <= ttft_limit)) &&
        (tpot_limit <= 0 || request_tpot <= tpot_limit)) {
      ++good;
    }
  }
  r.failures.assign(failures.begin(), failures.end());
  r.duration = outcomes.empty() ? 0 : last - first;
  r.ttft = Summarize(ttft);
  r.tpot = Summarize(tpot);
  r.itl = Summarize(itl);
  r.e2e = Summarize(e2e);
  if (tpot_limit > 0 && !itl.empty()) {
    const auto within =
        std::count_if(itl.begin(), itl.end(), [&](double gap) { return gap <= tpot_limit; });
    r.itl_within_tpot_limit = static_cast<double>(within) / static_cast<double>(itl.size());
  }
  if (r.duration > 0) {
    r.request_throughput = r.completed / r.duration;
    r.token_throughput = r.output_tokens / r.duration;
    r.total_token_throughput = (r.prompt_tokens + r.output_tokens) / r.duration;
    r.goodput = good / r.duration;
  }
  return r;
}

std::string ReportTable(const Report& r) {
  std::string out = absl::StrFormat(
      "requests %d, completed %d, failed %d; %d prompt tokens (%d from the prefix cache), %d "
      "generated; %.1f s\n",
      r.requests, r.completed, r.requests - r.completed, r.prompt_tokens, r.cached_tokens,
      r.output_tokens, r.duration);
  for (const auto& [code, n] : r.failures) absl::StrAppendFormat(&out, "  %s: %d\n", code, n);
  absl::StrAppend(&out, "| metric | mean | p50 | p90 | p99 |\n|---|---|---|---|---|\n");
  auto row = [&](const char* name, const Stats& s) {
    absl::StrAppendFormat(&out, "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms |\n", name,
                          1000 * s.mean, 1000 * s.p50, 1000 * s.p90, 1000 * s.p99);
  };
  row("TTFT", r.ttft);
  row("TPOT", r.tpot);
  row("ITL", r.itl);
  row("E2E", r.e2e);
  absl::StrAppendFormat(&out,
                        "throughput: %.2f requests/s, %.1f tokens/s generated, %.1f tokens/s "
                        "prompt + generated; goodput %.2f requests/s",
                        r.request_throughput, r.token_throughput, r.total_token_throughput,
                        r.goodput);
  if (r.ttft_limit > 0 || r.tpot_limit > 0) {
    absl::StrAppendFormat(&out, " (TTFT <= %.0f ms, TPOT <= %.0f ms)", 1000 * r.ttft_limit,
                          1000 * r.tpot_limit);
  }
  if (r.itl_within_tpot_limit >= 0) {
    absl::StrAppendFormat(&out, "; %.1f%% of inter-token gaps <= %.1f ms",
                          100 * r.itl_within_tpot_limit, 1000 * r.tpot_limit);
  }
  absl::StrAppend(&out, "\n");
  return out;
}

nlohmann::json ReportJson(const Report& r) {
  auto stats = [](const Stats& s) {
    return nlohmann::json{
        {"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}};
  };
  nlohmann::json failures = nlohmann::json::object();
  for (const auto& [code, n] : r.failures) failures[code] = n;
  return {{"requests", r.requests},
          {"completed", r.completed},
          {"failures", failures},
          {"prompt_tokens", r.prompt_tokens},
          {"cached_prompt_tokens", r.cached_tokens},
          {"output_tokens", r.output_tokens},
          {"duration_seconds", r.duration},
          {"ttft_seconds", stats(r.ttft)},
          {"tpot_seconds", stats(r.tpot)},
          {"itl_seconds", stats(r.itl)},
          {"e2e_seconds", stats(r.e2e)},
          {"request_throughput", r.request_throughput},
          {"token_throughput", r.token_throughput},
          {"total_token_throughput", r.total_token_throughput},
          {"goodput", r.goodput},
          {"ttft_limit_seconds", r.ttft_limit},
          {"tpot_limit_seconds", r.tpot_limit},
          {"itl_within_tpot_limit", r.itl_within_tpot_limit}};
}

}  // namespace shift::workload
