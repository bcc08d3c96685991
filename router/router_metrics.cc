#include "router/router_metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/metrics_http.h"
#include "common/status.h"
#include "prometheus/text_serializer.h"

namespace shift {
namespace {

using prometheus::Histogram;

// Seconds from 1 ms to ~100 s, roughly x2.5 apart.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100};
}

}  // namespace

RouterMetrics::RouterMetrics(const std::string& model_name, int num_groups)
    : model_(model_name.empty() ? prometheus::Labels{}
                                : prometheus::Labels{{"model_name", model_name}}),
      registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("shift_requests_total")
                   .Help("Requests that ended with a final message, by finish reason and group")
                   .Labels(model_)
                   .Register(r);
  errors_ = &prometheus::BuildCounter()
                 .Name("shift_request_errors_total")
                 .Help(
                     "Requests that ended with an error status, by gRPC code and group (none: "
                     "refused before one was picked)")
                 .Labels(model_)
                 .Register(r);
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(model_).Register(r);
  };
  queue_depth_ = gauge("shift_queue_depth", "Requests waiting for admission, by group");
  running_ = gauge("shift_running_sequences", "Sequences running, by group");
  blocks_used_ = gauge("shift_kv_blocks_used", "KV blocks held by sequences, by group");
  blocks_total_ = gauge("shift_kv_blocks_capacity", "KV blocks the router plans with, by group");
  blocks_cached_ =
      gauge("shift_kv_blocks_cached", "Blocks kept only by the prefix cache (evictable), by group");
  mode_ = gauge("shift_mode", "Mode of the group's latest step: 1 TP, 2 SP (shift.v1.Mode)");
  in_service_ = gauge("shift_group_in_service",
                      "1 while the worker group takes requests (all ranks formed), else 0");
  build_info_ = gauge("shift_build_info",
                      "Always 1; the labels say which shift version serves which model, and the "
                      "shift policy");
  layout_info_ = gauge("shift_group_layout_info",
                       "Always 1; the labels give the groups' layout: the base (sp) mode runs sp "
                       "Ulysses groups over TP shards of tp ranks (tp = 1: pure SP); the tp mode "
                       "is TP over all sp x tp ranks");
  threshold_ = &gauge("shift_threshold_tokens",
                      "Step tokens above which the policy picks SP (the cost policy's starting "
                      "rule; +Inf: never SP, 0: always)")
                    ->Add({});
  // The name before shift_threshold_tokens, served one more release.
  threshold_old_ = &gauge("shift_shift_threshold_tokens",
                          "Deprecated: shift_threshold_tokens (the same value); goes in the next "
                          "release")
                        ->Add({});
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(model_).Register(r).Add({});
  };
  // Families with one series per group, made below.
  auto per_group_counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(model_).Register(r);
  };
  auto* prompt_tokens = per_group_counter("shift_prompt_tokens_total",
                                          "Prompt tokens of admitted requests, by group");
  auto* generation_tokens =
      per_group_counter("shift_generation_tokens_total", "Tokens generated, by group");
  switches_ = &prometheus::BuildCounter()
                   .Name("shift_mode_switches_total")
                   .Help("Steps whose mode differs from the group's previous step, by group")
                   .Labels(model_)
                   .Register(r);
  auto* preemptions = per_group_counter("shift_preemptions_total",
                                        "Sequences preempted (recomputed later), by group");
  http_responses_ = &prometheus::BuildCounter()
                         .Name("shift_http_responses_total")
                         .Help(
                             "Responses of the OpenAI-compatible HTTP API, by endpoint and "
                             "HTTP status (a stream counts once, when it starts)")
                         .Labels(model_)
                         .Register(r);
  http_connections_ = &gauge("shift_http_connections", "Open HTTP connections")->Add({});
  auth_failures_ = counter("shift_auth_failures_total",
                           "Public calls refused as UNAUTHENTICATED (missing or wrong API key)");
  auto* predicted_seconds =
      per_group_counter("shift_cost_predicted_step_seconds_total",
                        "The cost policy's predicted step seconds, steps it predicted, by group");
  auto* measured_seconds =
      per_group_counter("shift_cost_measured_step_seconds_total",
                        "Measured step seconds of the steps the cost policy predicted, by group");
  auto* prediction_error = &prometheus::BuildHistogram()
                                .Name("shift_cost_prediction_relative_error")
                                .Help(
                                    "|predicted - measured| / measured step time, cost policy, "
                                    "by group")
                                .Labels(model_)
                                .Register(r);
  auto* cache_hits = per_group_counter(
      "shift_prefix_cache_hit_tokens_total",
      "Prompt tokens whose KV came from the prefix cache instead of compute, by group");
  auto* cache_queries = per_group_counter(
      "shift_prefix_cache_queried_tokens_total",
      "Prompt tokens looked up in the prefix cache (the hits' denominator), by group");
  auto histogram = [&](const char* name, const char* help) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Labels(model_).Register(r);
  };
  auto* ttft = histogram("shift_time_to_first_token_seconds", "Arrival to first generated token");
  auto* tpot = histogram("shift_time_per_output_token_seconds",
                         "Mean time between generated tokens of a request, after the first");
  auto* e2e = histogram("shift_e2e_request_latency_seconds", "Arrival to final message");
  auto* queue_time = histogram("shift_queue_time_seconds", "Arrival to first scheduled step");
  auto* itl = histogram("shift_inter_token_latency_seconds",
                        "Time between two consecutive streamed tokens of a request");
  auto* prefill_time = histogram("shift_request_prefill_time_seconds",
                                 "A request's prefill: first scheduled step to first token");
  auto* decode_time =
      histogram("shift_request_decode_time_seconds", "A request's decode: first token to last");
  auto* prompt_length =
      histogram("shift_request_prompt_tokens", "Prompt tokens of finished requests");
  auto* generation_length =
      histogram("shift_request_generation_tokens", "Tokens generated by finished requests");
  auto* overhead = histogram(
      "shift_router_step_overhead_seconds",
      "Time a busy worker group waits for the router between steps: from its last result until "
      "the next plan is sent (scheduling, plan building)");
  const Histogram::BucketBoundaries lengths = {1,   2,    5,    10,   20,    50,    100,   200,
                                               500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
  const Histogram::BucketBoundaries overheads = {1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4,
                                                 2e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2};
  for (int g = 0; g < num_groups; ++g) {
    const prometheus::Labels group = {{"group", absl::StrCat(g)}};
    groups_.push_back(
        {&prompt_tokens->Add(group), &generation_tokens->Add(group), &preemptions->Add(group),
         &cache_hits->Add(group), &cache_queries->Add(group), &ttft->Add(group, LatencyBuckets()),
         &tpot->Add(group, LatencyBuckets()), &e2e->Add(group, LatencyBuckets()),
         &queue_time->Add(group, LatencyBuckets()), &itl->Add(group, LatencyBuckets()),
         &prefill_time->Add(group, LatencyBuckets()), &decode_time->Add(group, LatencyBuckets()),
         &prompt_length->Add(group, lengths), &generation_length->Add(group, lengths),
         &overhead->Add(group, overheads),
         &prediction_error->Add(group, Histogram::BucketBoundaries{0.05, 0.1, 0.2, 0.3, 0.5, 1, 2}),
         &predicted_seconds->Add(group), &measured_seconds->Add(group)});
  }
  steps_ = &prometheus::BuildCounter()
                .Name("shift_steps_total")
                .Help("Steps executed, by group and the mode the shift policy chose")
                .Labels(model_)
                .Register(r);
  step_tokens_ =
      &prometheus::BuildHistogram()
           .Name("shift_step_tokens")
           .Help("Tokens scheduled per step (the policy's main input), by group and mode")
           .Labels(model_)
           .Register(r);
  step_budgets_ = &prometheus::BuildCounter()
                       .Name("shift_step_budget_total")
                       .Help(
                           "Steps sized to a time-per-output-token target (--tpot_slo_ms or a "
                           "request's tpot_slo_ms), by group and what bound their prefill "
                           "budget: cap, target, target_unmet (the decodes alone are predicted "
                           "over the target), starvation, ttft (a prompt would miss "
                           "--ttft_slo_ms), unpredicted")
                       .Labels(model_)
                       .Register(r);
  step_budget_tokens_ =
      &prometheus::BuildHistogram()
           .Name("shift_step_budget_tokens")
           .Help(
               "Prefill tokens a step sized to a time-per-output-token target may take, by "
               "group")
           .Labels(model_)
           .Register(r);
  step_duration_ = &prometheus::BuildHistogram()
                        .Name("shift_step_duration_seconds")
                        .Help(
                            "Router-observed step time (plan sent to last result), by group and "
                            "mode")
                        .Labels(model_)
                        .Register(r);
}

absl::Status RouterMetrics::Serve(const std::string& bind) {
  SHIFT_ASSIGN_OR_RETURN(exposer_, ServeMetrics(bind, model_));
  exposer_->RegisterCollectable(registry_);
  return absl::OkStatus();
}

int RouterMetrics::port() const { return exposer_ ? exposer_->GetListeningPorts().front() : 0; }

std::string RouterMetrics::Text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void RouterMetrics::RequestFinished(uint32_t group, const std::string& finish_reason,
                                    double e2e_seconds) {
  requests_->Add({{"finish_reason", finish_reason}, {"group", absl::StrCat(group)}}).Increment();
  Group(group).e2e->Observe(e2e_seconds);
}

void RouterMetrics::RequestFailed(absl::StatusCode code, int group) {
  prometheus::Labels labels = {{"code", absl::StatusCodeToString(code)}};
  if (group >= 0) labels["group"] = absl::StrCat(group);
  errors_->Add(labels).Increment();
}

void RouterMetrics::FirstToken(uint32_t group, double ttft_seconds, double queue_seconds) {
  Group(group).ttft->Observe(ttft_seconds);
  Group(group).queue_time->Observe(queue_seconds);
}

void RouterMetrics::OutputTokens(uint32_t group, double count, double seconds_per_token) {
  Group(group).generation_tokens->Increment(count);
  if (seconds_per_token >= 0) Group(group).tpot->Observe(seconds_per_token);
}

void RouterMetrics::PromptTokens(uint32_t group, double count) {
  Group(group).prompt_tokens->Increment(count);
}

void RouterMetrics::InterTokenLatency(uint32_t group, double seconds) {
  Group(group).itl->Observe(seconds);
}

void RouterMetrics::RequestPhases(uint32_t group, double prefill_seconds, double decode_seconds,
                                  double prompt_tokens, double generation_tokens) {
  PerGroup& g = Group(group);
  g.prefill_time->Observe(prefill_seconds);
  g.decode_time->Observe(decode_seconds);
  g.prompt_length->Observe(prompt_tokens);
  g.generation_length->Observe(generation_tokens);
}

void RouterMetrics::Step(uint32_t group, StepMode mode, bool switched, double tokens,
                         double seconds) {
  const std::string g = absl::StrCat(group);
  const prometheus::Labels labels = {{"group", g}, {"mode", StepModeName(mode)}};
  steps_->Add(labels).Increment();
  static const Histogram::BucketBoundaries token_buckets = {1,   2,   4,   8,    16,   32,   64,
                                                            128, 256, 512, 1024, 2048, 4096, 8192};
  step_tokens_->Add(labels, token_buckets).Observe(tokens);
  step_duration_->Add(labels, LatencyBuckets()).Observe(seconds);
  auto& switches = switches_->Add({{"group", g}});
  if (switched) switches.Increment();
  // As documented and as the dashboard maps it: shift.v1.Mode's numbers.
  mode_->Add({{"group", g}}).Set(mode == StepMode::kSequenceParallel ? 2 : 1);
}

void RouterMetrics::StepBudget(uint32_t group, const char* reason, double prefill_tokens) {
  const std::string g = absl::StrCat(group);
  step_budgets_->Add({{"group", g}, {"reason", reason}}).Increment();
  static const Histogram::BucketBoundaries token_buckets = {0,   1,   4,    16,   64,   128,
                                                            256, 512, 1024, 2048, 4096, 8192};
  step_budget_tokens_->Add({{"group", g}}, token_buckets).Observe(prefill_tokens);
}

void RouterMetrics::RouterOverhead(uint32_t group, double seconds) {
  Group(group).overhead->Observe(seconds);
}

void RouterMetrics::CostPrediction(uint32_t group, double predicted_seconds,
                                   double measured_seconds) {
  PerGroup& g = Group(group);
  g.predicted_seconds->Increment(predicted_seconds);
  g.measured_seconds->Increment(measured_seconds);
  if (measured_seconds > 0) {
    g.prediction_error->Observe(std::abs(predicted_seconds - measured_seconds) / measured_seconds);
  }
}

void RouterMetrics::GroupInService(uint32_t group, bool in_service) {
  in_service_->Add({{"group", absl::StrCat(group)}}).Set(in_service ? 1 : 0);
}

void RouterMetrics::SetServing(const std::string& model, const std::string& policy,
                               double threshold_tokens) {
  build_info_->Add({{"version", SHIFT_VERSION}, {"model", model}, {"policy", policy}}).Set(1);
  threshold_->Set(threshold_tokens);
  threshold_old_->Set(threshold_tokens);
}

void RouterMetrics::SetLayout(int sp, int tp) {
  layout_info_->Add({{"sp", absl::StrCat(sp)}, {"tp", absl::StrCat(tp)}}).Set(1);
}

void RouterMetrics::Preemptions(uint32_t group, double count) {
  Group(group).preemptions->Increment(count);
}

void RouterMetrics::AuthFailure() { auth_failures_->Increment(); }

void RouterMetrics::HttpResponse(const std::string& endpoint, int status) {
  http_responses_->Add({{"endpoint", endpoint}, {"status", std::to_string(status)}}).Increment();
}

void RouterMetrics::SetHttpConnections(double count) { http_connections_->Set(count); }

void RouterMetrics::PrefixCacheHits(uint32_t group, double tokens) {
  if (tokens > 0) Group(group).cache_hits->Increment(tokens);
}

void RouterMetrics::PrefixCacheQueries(uint32_t group, double tokens) {
  if (tokens > 0) Group(group).cache_queries->Increment(tokens);
}

void RouterMetrics::SetLoad(uint32_t group, double queued, double running, double blocks_used,
                            double blocks_total, double blocks_cached) {
  const prometheus::Labels labels = {{"group", absl::StrCat(group)}};
  queue_depth_->Add(labels).Set(queued);
  running_->Add(labels).Set(running);
  blocks_used_->Add(labels).Set(blocks_used);
  blocks_total_->Add(labels).Set(blocks_total);
  blocks_cached_->Add(labels).Set(blocks_cached);
}

}  // namespace shift
