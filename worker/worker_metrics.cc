#include "worker/worker_metrics.h"

#include "absl/strings/str_cat.h"
#include "common/metrics_http.h"
#include "common/status.h"

namespace shift {

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Serve(
    const std::string& bind, const prometheus::Labels& labels) {
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<prometheus::Exposer> exposer, ServeMetrics(bind, labels));
  return std::unique_ptr<WorkerMetrics>(new WorkerMetrics(std::move(exposer), labels));
}

WorkerMetrics::WorkerMetrics(std::unique_ptr<prometheus::Exposer> exposer,
                             const prometheus::Labels& labels)
    : exposer_(std::move(exposer)), registry_(std::make_shared<prometheus::Registry>()) {
  weight_bytes_ = &prometheus::BuildGauge()
                       .Name("shift_worker_weight_bytes")
                       .Help("Bytes of weights this rank holds")
                       .Labels(labels)
                       .Register(*registry_)
                       .Add({});
  fp8_weight_bytes_ = &prometheus::BuildGauge()
                           .Name("shift_worker_fp8_weight_bytes")
                           .Help(
                               "Bytes of this rank's FP8 weights as stored: E4M3 codes and the "
                               "fp32 scales (per row or per 128x128 block) that cover them")
                           .Labels(labels)
                           .Register(*registry_)
                           .Add({});
  kv_blocks_ = &prometheus::BuildGauge()
                    .Name("shift_worker_kv_blocks")
                    .Help("KV cache blocks this rank allocated")
                    .Labels(labels)
                    .Register(*registry_)
                    .Add({});
  step_gap_ = &prometheus::BuildHistogram()
                   .Name("shift_worker_step_gap_seconds")
                   .Help(
                       "Time this rank waited between sending a step's result and receiving the "
                       "next plan, for plans the router built straight after that step with "
                       "requests waiting (its turn-around, network included; idle time excluded)")
                   .Labels(labels)
                   .Register(*registry_)
                   .Add({}, prometheus::Histogram::BucketBoundaries{
                                1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
                                2.5e-2, 5e-2, 0.1, 0.25});
  auto& steps = prometheus::BuildCounter()
                    .Name("shift_worker_steps_total")
                    .Help("Steps executed, by mode")
                    .Labels(labels)
                    .Register(*registry_);
  auto& tokens =
      prometheus::BuildCounter()
          .Name("shift_worker_step_tokens_total")
          .Help("Tokens whose KV this rank computed (prompt chunks and decodes), by mode")
          .Labels(labels)
          .Register(*registry_);
  auto& compute = prometheus::BuildCounter()
                      .Name("shift_worker_step_compute_seconds_total")
                      .Help("Seconds spent computing steps (collectives excluded), by mode")
                      .Labels(labels)
                      .Register(*registry_);
  auto& comm = prometheus::BuildCounter()
                   .Name("shift_worker_step_communication_seconds_total")
                   .Help("Seconds spent in collectives during steps, by mode")
                   .Labels(labels)
                   .Register(*registry_);
  auto& bytes = prometheus::BuildCounter()
                    .Name("shift_worker_step_communication_bytes_total")
                    .Help("Bytes this rank sent through its communicator, by mode")
                    .Labels(labels)
                    .Register(*registry_);
  const char* names[2] = {"tp", "sp"};
  for (int m = 0; m < 2; ++m) {
    modes_[m] = {&steps.Add({{"mode", names[m]}}), &tokens.Add({{"mode", names[m]}}),
                 &compute.Add({{"mode", names[m]}}), &comm.Add({{"mode", names[m]}}),
                 &bytes.Add({{"mode", names[m]}})};
  }
  auto& op_calls = prometheus::BuildCounter()
                       .Name("shift_worker_op_calls_total")
                       .Help("Backend operations run, by operation")
                       .Labels(labels)
                       .Register(*registry_);
  auto& op_flops = prometheus::BuildCounter()
                       .Name("shift_worker_op_flops_total")
                       .Help("FLOPs of backend operations (a multiply-add counts 2), by operation")
                       .Labels(labels)
                       .Register(*registry_);
  auto& op_bytes = prometheus::BuildCounter()
                       .Name("shift_worker_op_bytes_total")
                       .Help("Least memory traffic of backend operations, by operation")
                       .Labels(labels)
                       .Register(*registry_);
  auto& op_seconds = prometheus::BuildCounter()
                         .Name("shift_worker_op_seconds_total")
                         .Help("Wall seconds in backend operations, by operation")
                         .Labels(labels)
                         .Register(*registry_);
  for (int i = 0; i < kernels::kNumOps; ++i) {
    const prometheus::Labels op = {{"op", kernels::OpName(static_cast<kernels::Op>(i))}};
    ops_[i] = {&op_calls.Add(op), &op_flops.Add(op), &op_bytes.Add(op), &op_seconds.Add(op), {}};
  }
  auto& group_bytes =
      prometheus::BuildCounter()
          .Name("shift_worker_collective_bytes_total")
          .Help(
              "Bytes this rank sent in collectives, by the communicator they ran in (label "
              "collective): ulysses (the sp mode's all-to-alls), tp (all-reduces: TP over all "
              "ranks or the sp mode's TP subgroup), gather (logits to the leader); eager steps")
          .Labels(labels)
          .Register(*registry_);
  auto& group_seconds = prometheus::BuildCounter()
                            .Name("shift_worker_collective_seconds_total")
                            .Help(
                                "Seconds in collectives, by the communicator they ran in (as "
                                "shift_worker_collective_bytes_total)")
                            .Labels(labels)
                            .Register(*registry_);
  for (int g = 0; g < ModelExecutor::kNumCollectiveGroups; ++g) {
    // Not "group": that label is the rank's worker group.
    const prometheus::Labels group = {
        {"collective",
         ModelExecutor::CollectiveGroupName(static_cast<ModelExecutor::CollectiveGroup>(g))}};
    groups_[g] = {&group_bytes.Add(group), &group_seconds.Add(group), {}};
  }
  exposer_->RegisterCollectable(registry_);
}

void WorkerMetrics::RecordCollectives(const Engine& engine) {
  for (int g = 0; g < ModelExecutor::kNumCollectiveGroups; ++g) {
    PerGroup& group = groups_[g];
    const CollectiveTraffic& now = engine.traffic(static_cast<ModelExecutor::CollectiveGroup>(g));
    group.bytes->Increment(static_cast<double>(now.bytes_sent - group.seen.bytes_sent));
    group.seconds->Increment(now.seconds - group.seen.seconds);
    group.seen = now;
  }
}

void WorkerMetrics::RecordOps(const kernels::Backend& backend) {
  for (int i = 0; i < kernels::kNumOps; ++i) {
    PerOp& op = ops_[i];
    const kernels::OpStats& now = backend.stats(static_cast<kernels::Op>(i));
    op.calls->Increment(static_cast<double>(now.calls - op.seen.calls));
    op.flops->Increment(static_cast<double>(now.flops - op.seen.flops));
    op.bytes->Increment(static_cast<double>(now.bytes - op.seen.bytes));
    op.seconds->Increment(now.seconds - op.seen.seconds);
    op.seen = now;
  }
}

int WorkerMetrics::port() const { return exposer_->GetListeningPorts().front(); }

void WorkerMetrics::StepGap(double seconds) { step_gap_->Observe(seconds); }

void WorkerMetrics::SetModel(double weight_bytes, double fp8_weight_bytes, double kv_blocks) {
  weight_bytes_->Set(weight_bytes);
  fp8_weight_bytes_->Set(fp8_weight_bytes);
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
