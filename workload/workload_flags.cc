#include "workload/workload_flags.h"

#include <algorithm>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

ABSL_FLAG(std::string, workload, "poisson",
          "poisson (--rate), closed (--concurrency), burst (--burst_*) or trace (--trace)");
ABSL_FLAG(double, rate, 2, "poisson: requests per second");
ABSL_FLAG(double, duration_s, 30, "poisson, burst, closed: seconds of arrivals");
ABSL_FLAG(int32_t, concurrency, 8, "closed: requests kept in flight");
ABSL_FLAG(int64_t, requests, 0, "Most requests to send (0: no limit; for traces, rows to read)");
ABSL_FLAG(double, burst_on_rate, 10, "burst: requests per second during a burst");
ABSL_FLAG(double, burst_off_rate, 0.5, "burst: requests per second between bursts");
ABSL_FLAG(double, burst_on_s, 3, "burst: seconds per burst");
ABSL_FLAG(double, burst_off_s, 7, "burst: seconds between bursts");
ABSL_FLAG(std::string, trace, "",
          "trace: an Azure LLM inference CSV or a Mooncake JSONL file to replay");
ABSL_FLAG(double, time_scale, 1, "trace: replay this many times faster");
ABSL_FLAG(double, length_scale, 1, "trace: divide prompt and output lengths by this");
ABSL_FLAG(int64_t, block_tokens, 512, "trace: tokens per Mooncake hash id (after --length_scale)");
ABSL_FLAG(int64_t, input_tokens, 128, "Synthetic workloads: prompt tokens per request");
ABSL_FLAG(int64_t, output_tokens, 64, "Synthetic workloads: tokens generated per request");
ABSL_FLAG(int64_t, max_output_tokens, 1024, "trace: cap on tokens generated per request");
ABSL_FLAG(uint64_t, seed, 1, "Seed of arrivals and prompts");
ABSL_FLAG(double, ttft_limit_ms, 0, "Goodput: counts requests with TTFT at most this (0: any)");
ABSL_FLAG(double, tpot_limit_ms, 0, "Goodput: counts requests with TPOT at most this (0: any)");

namespace shift::workload {
namespace {

// Prompts of synthetic workloads: ids from 10 up (clear of special tokens).
PromptMaker SyntheticPrompts(int32_t vocab_size, uint64_t seed) {
  return PromptMaker(std::min(10, vocab_size - 1), vocab_size, 1, seed);
}

}  // namespace

absl::StatusOr<std::vector<Request>> BuildWorkloadFromFlags(int32_t vocab_size,
                                                            int64_t max_model_len) {
  const std::string kind = absl::GetFlag(FLAGS_workload);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const int32_t hi = vocab_size;
  const int64_t max_len = max_model_len;
  if (kind == "trace") {
    if (absl::GetFlag(FLAGS_trace).empty()) {
      return absl::InvalidArgumentError("--workload=trace needs --trace=FILE");
    }
    SHIFT_ASSIGN_OR_RETURN(std::vector<TraceRow> rows,
                           ReadTrace(absl::GetFlag(FLAGS_trace), absl::GetFlag(FLAGS_requests)));
    const int64_t max_out = std::min<int64_t>(absl::GetFlag(FLAGS_max_output_tokens), max_len / 2);
    PromptMaker maker(std::min(10, hi - 1), hi,
                      std::max<int64_t>(1, static_cast<int64_t>(absl::GetFlag(FLAGS_block_tokens) /
                                                                absl::GetFlag(FLAGS_length_scale))),
                      seed);
    return FromTrace(rows, maker, absl::GetFlag(FLAGS_time_scale),
                     absl::GetFlag(FLAGS_length_scale), max_len - max_out, max_out);
  }
  const int64_t in = absl::GetFlag(FLAGS_input_tokens), out = absl::GetFlag(FLAGS_output_tokens);
  if (in < 1 || out < 1 || in + out > max_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("--input_tokens + --output_tokens must be in 2..", max_len,
                     " (the server's max model length)"));
  }
  std::vector<double> times;
  const double duration = absl::GetFlag(FLAGS_duration_s);
  if (kind == "poisson") {
    times = PoissonArrivals(absl::GetFlag(FLAGS_rate), duration, seed);
  } else if (kind == "burst") {
    times = BurstArrivals(absl::GetFlag(FLAGS_burst_on_rate), absl::GetFlag(FLAGS_burst_off_rate),
                          absl::GetFlag(FLAGS_burst_on_s), absl::GetFlag(FLAGS_burst_off_s),
                          duration, seed);
  } else if (kind == "closed") {
    // Times are unused: each request starts when one in flight ends, until
    // --requests or --duration_s. Prompts are made as requests go out.
    const int64_t n = absl::GetFlag(FLAGS_requests) > 0 ? absl::GetFlag(FLAGS_requests) : 1000000;
    return std::vector<Request>(n, Request{0.0, {}, static_cast<uint32_t>(out)});
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --workload \"", kind, "\": use poisson, closed, burst or trace"));
  }
  if (absl::GetFlag(FLAGS_requests) > 0 &&
      static_cast<int64_t>(times.size()) > absl::GetFlag(FLAGS_requests)) {
    times.resize(absl::GetFlag(FLAGS_requests));
  }
  std::vector<Request> requests;
  const PromptMaker maker = SyntheticPrompts(vocab_size, seed);
  for (size_t i = 0; i < times.size(); ++i) {
    requests.push_back({times[i], maker.Random(in, i), static_cast<uint32_t>(out)});
  }
  return requests;
}

int32_t ClosedLoopConcurrency() {
  return absl::GetFlag(FLAGS_workload) == "closed" ? absl::GetFlag(FLAGS_concurrency) : 0;
}

double WorkloadDuration() { return absl::GetFlag(FLAGS_duration_s); }

std::string WorkloadName() { return absl::GetFlag(FLAGS_workload); }

std::vector<int32_t> ClosedLoopPrompt(int32_t vocab_size, uint64_t index) {
  return SyntheticPrompts(vocab_size, absl::GetFlag(FLAGS_seed))
      .Random(absl::GetFlag(FLAGS_input_tokens), index);
}

Report MakeReportFromFlags(const std::vector<Outcome>& outcomes) {
  return MakeReport(outcomes, absl::GetFlag(FLAGS_ttft_limit_ms) / 1000,
                    absl::GetFlag(FLAGS_tpot_limit_ms) / 1000);
}

nlohmann::json OutcomesJson(const std::vector<Outcome>& outcomes) {
  nlohmann::json each = nlohmann::json::array();
  for (const Outcome& o : outcomes) {
    each.push_back({{"code", o.code},
                    {"start", o.start},
                    {"ttft", o.ttft},
                    {"e2e", o.e2e},
                    {"prompt_tokens", o.prompt_tokens},
                    {"output_tokens", o.output_tokens},
                    {"cached_tokens", o.cached_tokens}});
  }
  return each;
}

}  // namespace shift::workload
