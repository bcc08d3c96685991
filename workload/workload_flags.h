// The workload flags shift-bench and shift-sim share (--workload, --rate,
// --trace, ...), so one command line means one workload in both: the same
// arrivals, prompts and lengths, and the same report limits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workload/workload.h"

namespace shift::workload {

// The requests the flags describe, for a model of `vocab_size` ids and
// `max_model_len` tokens per request. Closed-loop workloads get requests
// with empty prompts and no times (the driver fills both as it goes).
absl::StatusOr<std::vector<Request>> BuildWorkloadFromFlags(int32_t vocab_size,
                                                            int64_t max_model_len);
// --workload=closed: requests kept in flight (0: open loop).
int32_t ClosedLoopConcurrency();
// --duration_s: a closed loop stops sending after it.
double WorkloadDuration();
// --workload.
std::string WorkloadName();
// The prompt of a closed loop's request `index` (made as requests go out).
std::vector<int32_t> ClosedLoopPrompt(int32_t vocab_size, uint64_t index);
// The report of `outcomes` under --ttft_limit_ms and --tpot_limit_ms.
Report MakeReportFromFlags(const std::vector<Outcome>& outcomes);
// Every outcome as JSON (for --json_out).
nlohmann::json OutcomesJson(const std::vector<Outcome>& outcomes);

}  // namespace shift::workload
