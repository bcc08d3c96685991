// The router's Prometheus metrics (docs/architecture.md, Metrics): requests by how they
// ended, errors by code, queue and KV usage, token counts, latency
// histograms, and every shift decision (steps and tokens per mode, switches,
// the current mode), served on /metrics. Every series carries the served
// model's name (model_name, as vLLM's do), and every series about requests
// or steps its worker group (group): a dashboard scopes each panel by both.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/step_mode.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace shift {

class RouterMetrics {
 public:
  // `model_name` labels every series (none when empty); `num_groups` worker
  // groups, numbered from 0, get their per-group series up front.
  explicit RouterMetrics(const std::string &model_name = "", int num_groups = 1);
  int num_groups() const { return static_cast<int>(groups_.size()); }
  // Serves /metrics on `bind` ("127.0.0.1:0" picks a port).
  absl::Status Serve(const std::string &bind);
  int port() const;
  // The text exposition, as /metrics would serve it.
  std::string Text() const;

  // A request's events, on the group that ran it (below num_groups).
  void RequestFinished(uint32_t group, const std::string &finish_reason, double e2e_seconds);
  // A request that ended with an error: on `group` when it had one (< 0: a
  // refusal before one was picked; its series has no group label).
  void RequestFailed(absl::StatusCode code, int group = -1);
  void FirstToken(uint32_t group, double ttft_seconds, double queue_seconds);
  void OutputTokens(uint32_t group, double count, double seconds_per_token);
  void PromptTokens(uint32_t group, double count);
  // The time between two streamed tokens of a request (vLLM's
  // inter-token latency; TPOT is its mean per request).
  void InterTokenLatency(uint32_t group, double seconds);
  // A request that finished: its prefill time (first scheduled to first
  // token), decode time (first token to last), and its prompt and
  // generation lengths.
  void RequestPhases(uint32_t group, double prefill_seconds, double decode_seconds,
                     double prompt_tokens, double generation_tokens);
  void Step(uint32_t group, StepMode mode, bool switched, double tokens, double seconds);
  // How long a busy group waited for the router between two steps: from
  // its last result to the next plan sent (the step loop's own work;
  // streaming runs on the output threads).
  void RouterOverhead(uint32_t group, double seconds);
  // With --tpot_slo_ms: a step's prefill budget and what bound it
  // (core/step_budget.h's reasons).
  void StepBudget(uint32_t group, const char *reason, double prefill_tokens);
  void Preemptions(uint32_t group, double count);
  // The cost policy's prediction for a step and the time it took.
  void CostPrediction(uint32_t group, double predicted_seconds, double measured_seconds);
  void SetLoad(uint32_t group, double queued, double running, double blocks_used,
               double blocks_total, double blocks_cached);
  void PrefixCacheHits(uint32_t group, double tokens);
  void PrefixCacheQueries(uint32_t group, double tokens);
  // An HTTP (OpenAI API) response: its endpoint and status.
  void HttpResponse(const std::string &endpoint, int status);
  // Open HTTP connections.
  void SetHttpConnections(double count);
  // A public call refused for a missing or wrong API key.
  void AuthFailure();
  // Whether a worker group takes requests (formed and not lost a rank).
  void GroupInService(uint32_t group, bool in_service);
  // What this router serves and how it decides modes: the build-info gauge
  // (1, with the labels) and the step-token threshold in force (+Inf when
  // the policy never picks SP, 0 when it always does).
  void SetServing(const std::string &model, const std::string &policy, double threshold_tokens);
  // The groups' layout: shift_group_layout_info{sp, tp} = 1 (the base
  // mode's Ulysses degree and the TP degree inside it).
  void SetLayout(int sp, int tp);

 private:
  // A group's series, made up front so that the hot paths (a histogram
  // sample per streamed token) take no family lock.
  struct PerGroup {
    prometheus::Counter *prompt_tokens, *generation_tokens, *preemptions, *cache_hits,
        *cache_queries;
    prometheus::Histogram *ttft, *tpot, *e2e, *queue_time, *itl, *prefill_time, *decode_time,
        *prompt_length, *generation_length, *overhead, *prediction_error;
    prometheus::Counter *predicted_seconds, *measured_seconds;
  };
  PerGroup &Group(uint32_t group) { return groups_.at(group); }

  const prometheus::Labels model_;  // {model_name} or nothing
  std::vector<PerGroup> groups_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter> *requests_;
  prometheus::Family<prometheus::Counter> *errors_;
  // Per group (label group="g"), created on first use.
  prometheus::Family<prometheus::Gauge> *queue_depth_, *running_, *blocks_used_, *blocks_total_,
      *blocks_cached_, *mode_, *in_service_;
  prometheus::Family<prometheus::Gauge> *build_info_, *layout_info_;
  prometheus::Gauge *threshold_, *threshold_old_;
  prometheus::Family<prometheus::Counter> *steps_, *switches_, *http_responses_;
  prometheus::Gauge *http_connections_;
  prometheus::Family<prometheus::Histogram> *step_tokens_, *step_duration_, *step_budget_tokens_;
  prometheus::Family<prometheus::Counter> *step_budgets_;
  prometheus::Counter *auth_failures_;
};

}  // namespace shift
