// What a load generator offers a server, and what it makes of the answers,
// with no network in it, so shift-bench and a simulator share it unchanged:
// arrival processes, readers for the public request traces (Azure LLM
// inference CSV, Mooncake JSONL), prompts of exact token lengths (sharing
// real prefix blocks when a trace says so), and the report: latency
// percentiles, throughput and goodput.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace shift::workload {

// One request to offer: when (seconds from the start), the prompt's token
// ids and how many tokens to generate.
struct Request {
  double at = 0;
  std::vector<int32_t> prompt;
  uint32_t max_tokens = 1;
};

// Arrival times in [0, duration): a Poisson process of `rate` per second.
std::vector<double> PoissonArrivals(double rate, double duration, uint64_t seed);
// Bursts: Poisson at `on_rate` for `on` seconds, then at `off_rate` for
// `off` seconds, repeated over `duration`.
std::vector<double> BurstArrivals(double on_rate, double off_rate, double on, double off,
                                  double duration, uint64_t seed);

// A trace row: arrival (seconds after the trace's first row), lengths, and
// for Mooncake the ids of the prompt's blocks (equal ids: a shared prefix).
struct TraceRow {
  double at = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  std::vector<int64_t> hash_ids;
};
// `TIMESTAMP,ContextTokens,GeneratedTokens` with a header line; timestamps
// like 2023-11-16 18:15:46.6805900. Reads at most `limit` rows (0: all).
// A malformed line is an error naming the file and line.
absl::StatusOr<std::vector<TraceRow>> ReadAzureTrace(const std::string& path, int64_t limit = 0);
// One JSON object per line: timestamp (ms), input_length, output_length,
// hash_ids. The same limit and errors.
absl::StatusOr<std::vector<TraceRow>> ReadMooncakeTrace(const std::string& path, int64_t limit = 0);
// Either, by file name (.csv or .jsonl).
absl::StatusOr<std::vector<TraceRow>> ReadTrace(const std::string& path, int64_t limit = 0);

// Makes prompts of token ids in [lo, hi). A block of a trace's hash id is
// always the same `block_tokens` ids, so rows sharing hash ids share those
// prompt prefixes exactly.
class PromptMaker {
 public:
  PromptMaker(int32_t lo, int32_t hi, int64_t block_tokens, uint64_t seed)
      : lo_(lo), hi_(hi), block_tokens_(block_tokens), seed_(seed) {}
  // `length` ids, different for each `index`.
  std::vector<int32_t> Random(int64_t length, uint64_t index) const;
  // `length` ids made of the hash ids' blocks (then random ones if the ids
  // run out).
  std::vector<int32_t> FromBlocks(const std::vector<int64_t>& hash_ids, int64_t length,
                                  uint64_t index) const;

 private:
  int32_t lo_, hi_;
  int64_t block_tokens_;
  uint64_t seed_;
};

// Turns trace rows into requests: times divided by `time_scale` (2: twice
// as fast), lengths divided by `length_scale` (at least 1 token), prompts
// capped at `max_prompt` tokens and outputs at `max_output`.
std::vector<Request> FromTrace(const std::vector<TraceRow>& rows, const PromptMaker& maker,
                               double time_scale, double length_scale, int64_t max_prompt,
                               int64_t max_output);

// What happened to one request.
struct Outcome {
  std::string code = "OK";          // gRPC status code name, or HTTP_<status> and
                                    // the like over HTTP (tools/openai_client.h)
  double start = 0;                 // seconds from the run's start
  double ttft = -1;                 // seconds to the first token (-1: none)
  double e2e = 0;                   // seconds to the end of the call
  std::vector<double> token_times;  // seconds from start of each token's arrival
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;
};

struct Stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
  int64_t count = 0;
};
Stats Summarize(std::vector<double> values);

struct Report {
  int64_t requests = 0, completed = 0;
  std::vector<std::pair<std::string, int64_t>> failures;  // by code
  int64_t prompt_tokens = 0, output_tokens = 0, cached_tokens = 0;
  double duration = 0;  // seconds, first start to last end
  Stats ttft, tpot, itl, e2e;
  // Completed requests, generated tokens, and prompt plus generated tokens
  // (the paper's throughput), per second of the run.
  double request_throughput = 0, token_throughput = 0, total_token_throughput = 0;
  // Requests within both limits per second (goodput), and the limits.
  double goodput = 0, ttft_limit = 0, tpot_limit = 0;
  // The share of inter-token gaps (ITL) at most tpot_limit: how often a
  // stream kept the pace, where TPOT averages a request (-1: no limit).
  double itl_within_tpot_limit = -1;
};
// TPOT is a request's (e2e - ttft) / (output - 1); ITL each gap between
// tokens. Limits <= 0 are not applied.
Report MakeReport(const std::vector<Outcome>& outcomes, double ttft_limit, double tpot_limit);
std::string ReportTable(const Report& report);
nlohmann::json ReportJson(const Report& report);

}  // namespace shift::workload
