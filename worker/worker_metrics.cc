#include "worker/worker_metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace shift {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Serve(const std::string& bind) {
  try {
    return std::unique_ptr<WorkerMetrics>(
        new WorkerMetrics(std::make_unique<prometheus::Exposer>(bind)));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", bind, ": ", e.what()));
  }
}

WorkerMetrics::WorkerMetrics(std::unique_ptr<prometheus::Exposer> exposer)
    : exposer_(std::move(exposer)), registry_(std::make_shared<prometheus::Registry>()) {
  weight_bytes_ = &prometheus::BuildGauge()
                       .Name("shift_worker_weight_bytes")
                       .Help("Bytes of weights this rank holds")
                       .Register(*registry_)
                       .Add({});
  kv_blocks_ = &prometheus::BuildGauge()
                    .Name("shift_worker_kv_blocks")
                    .Help("KV cache blocks this rank allocated")
                    .Register(*registry_)
                    .Add({});
  auto& steps = prometheus::BuildCounter()
                    .Name("shift_worker_steps_total")
                    .Help("Steps executed, by mode")
                    .Register(*registry_);
  auto& tokens = prometheus::BuildCounter()
                     .Name("shift_worker_step_tokens_total")
                     .Help("Tokens whose KV this rank computed (prompt chunks and decodes), by mode")
                     .Register(*registry_);
  auto& compute = prometheus::BuildCounter()
                      .Name("shift_worker_step_compute_seconds_total")
                      .Help("Seconds spent computing steps (collectives excluded), by mode")
                      .Register(*registry_);
  auto& comm = prometheus::BuildCounter()
                   .Name("shift_worker_step_communication_seconds_total")
                   .Help("Seconds spent in collectives during steps, by mode")
                   .Register(*registry_);
  auto& bytes = prometheus::BuildCounter()
                    .Name("shift_worker_step_communication_bytes_total")
                    .Help("Bytes this rank sent through its communicator, by mode")
                    .Register(*registry_);
  const char* names[2] = {"tp", "sp"};
  for (int m = 0; m < 2; ++m) {
    modes_[m] = {&steps.Add({{"mode", names[m]}}), &tokens.Add({{"mode", names[m]}}),
                 &compute.Add({{"mode", names[m]}}),
                 &comm.Add({{"mode", names[m]}}), &bytes.Add({{"mode", names[m]}})};
  }
  exposer_->RegisterCollectable(registry_);
}

int WorkerMetrics::port() const { return exposer_->GetListeningPorts().front(); }

void WorkerMetrics::SetModel(double weight_bytes, double kv_blocks) {
  weight_bytes_->Set(weight_bytes);
  kv_blocks_->Set(kv_blocks);
}

void WorkerMetrics::RecordStep(bool sp, double tokens, double compute_seconds, double comm_seconds,
                               double bytes) {
  PerMode& m = modes_[sp ? 1 : 0];
  m.steps->Increment();
  m.tokens->Increment(tokens);
  m.compute->Increment(compute_seconds);
  m.comm->Increment(comm_seconds);
  m.bytes->Increment(bytes);
}

}  // namespace shift
