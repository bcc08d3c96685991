// A rank's Prometheus endpoint: weight bytes, KV blocks, per-mode step
// counts, compute and communication seconds and bytes moved, and the
// backend's per-operation calls, FLOPs, bytes and seconds.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/engine.h"

namespace shift {

class WorkerMetrics {
 public:
  // Serves /metrics on `bind` ("127.0.0.1:0" picks a port); every series
  // carries `labels` (the rank's model_name, group and rank).
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Serve(const std::string& bind,
                                                              const prometheus::Labels& labels);

  int port() const;
  void SetModel(double weight_bytes, double fp8_weight_bytes, double kv_blocks);
  void RecordStep(bool sp, double tokens, double compute_seconds, double comm_seconds,
                  double bytes);
  // The wait between sending a step's result and receiving the next plan,
  // for a plan the router built straight after that result.
  void StepGap(double seconds);
  // Brings the per-operation counters up to the backend's totals.
  void RecordOps(const kernels::Backend& backend);
  // Brings the per-group collective counters up to the engine's totals.
  void RecordCollectives(const Engine& engine);

 private:
  WorkerMetrics(std::unique_ptr<prometheus::Exposer> exposer, const prometheus::Labels& labels);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* weight_bytes_;
  prometheus::Gauge* fp8_weight_bytes_;
  prometheus::Gauge* kv_blocks_;
  prometheus::Histogram* step_gap_;
  struct PerMode {
    prometheus::Counter *steps, *tokens, *compute, *comm, *bytes;
  } modes_[2];
  struct PerOp {
    prometheus::Counter *calls, *flops, *bytes, *seconds;
    kernels::OpStats seen;
  } ops_[kernels::kNumOps];
  struct PerGroup {
    prometheus::Counter *bytes, *seconds;
    CollectiveTraffic seen;
  } groups_[ModelExecutor::kNumCollectiveGroups];
};

}  // namespace shift
