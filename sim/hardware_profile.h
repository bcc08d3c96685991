// A machine as shift-sim prices it: the accelerators of one worker group
// (compute, memory, bandwidth), their collectives as latency plus bytes over
// bandwidth, and the server's fixed costs. Profiles are JSON files a user can
// edit (bench/sim/hardware/); every number in one carries its source, so a
// prediction can be traced back to a datasheet, a published benchmark or a
// measurement.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace shift::sim {

// One collective: t(B) = latency_s + factor · B / bus_bandwidth, where B is
// the buffer's bytes on one rank and the factor is the NCCL bus-bandwidth
// one (all-reduce 2(n-1)/n, all-to-all and gather (n-1)/n).
struct Collective {
  double latency_s = 0;
  double bus_bandwidth = 0;  // bytes/s
};

struct HardwareProfile {
  std::string name;
  int gpus = 0;  // devices (ranks) in one node
  // Memory per device, and the fraction of it the server may use (weights,
  // KV cache and activations), as vLLM's gpu_memory_utilization.
  double memory_bytes = 0;
  double memory_utilization = 0.9;
  // Bytes per device kept for activations and workspaces, outside the KV.
  double activation_reserve_bytes = 0;
  // When set (> 0), the KV cache per device in bytes, whatever the memory
  // (a CPU cluster's --kv_cache_bytes).
  double kv_cache_bytes = 0;
  // Dense peak FLOP/s per device by GEMM input type: "fp8", "bf16", "f32".
  std::map<std::string, double> peak_flops;
  double memory_bandwidth = 0;  // bytes/s per device
  // Achieved fractions: GEMMs of each type reach gemm_efficiency[type] of
  // its peak as rows grow, half of it at gemm_half_rows rows; attention
  // attention_efficiency of the bf16 (else f32) peak; memory traffic
  // bandwidth_efficiency of the bandwidth.
  std::map<std::string, double> gemm_efficiency;
  double gemm_half_rows = 0;
  double attention_efficiency = 0;
  double bandwidth_efficiency = 0;
  // Whether compute and memory traffic overlap (a GPU: a kernel takes the
  // longer of the two) or add (a CPU's loops).
  bool overlap = true;
  // Bytes per activation element and per KV element.
  int activation_bytes = 2;
  // Bytes per weight: 0 takes the model's (2 for bf16, 1 for FP8).
  int weight_bytes = 0;
  Collective all_reduce, all_to_all, gather;
  // Fixed costs: per step (plan, launch, sampling), per layer (kernel
  // launches), the loop's gap between one step's end and the next's start,
  // and the extra cost of a step in the other mode than its group's last
  // (nothing moves, but caches hold the other mode's weight slices).
  double step_overhead_s = 0;
  double layer_overhead_s = 0;
  double loop_overhead_s = 0;
  double switch_overhead_s = 0;
  // Where each number comes from, by its JSON path ("peak_flops.bf16").
  std::map<std::string, std::string> sources;
};

// Parses a profile; every number must be present where required, in range,
// and have a source. Errors name `origin` and the field.
absl::StatusOr<HardwareProfile> ParseHardwareProfile(const nlohmann::json& j,
                                                     const std::string& origin);
absl::StatusOr<HardwareProfile> LoadHardwareProfile(const std::string& path);
nlohmann::json HardwareProfileJson(const HardwareProfile& profile);
// Sets the number at `path` ("gemm_efficiency.fp8", "all_reduce.bus_bandwidth")
// to `value`, its source to `source`; INVALID_ARGUMENT for an unknown path.
absl::Status SetProfileValue(HardwareProfile* profile, const std::string& path, double value,
                             const std::string& source);

}  // namespace shift::sim
