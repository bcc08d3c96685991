// The router's Prometheus metrics (docs/architecture.md, Metrics): requests by how they
// ended, errors by code, queue and KV usage, token counts, latency
// histograms, and every shift decision (steps and tokens per mode, switches,
// the current mode), served on /metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

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
  RouterMetrics();
  // Serves /metrics on `bind` ("127.0.0.1:0" picks a port).
  absl::Status Serve(const std::string &bind);
  int port() const;
  // The text exposition, as /metrics would serve it.
  std::string Text() const;

  void RequestFinished(const std::string &finish_reason, double e2e_seconds);
  void RequestFailed(absl::StatusCode code);
  void FirstToken(double ttft_seconds, double queue_seconds);
  void OutputTokens(double count, double seconds_per_token);
  void PromptTokens(double count);
  // The time between two streamed tokens of a request (vLLM's
  // inter-token latency; TPOT is its mean per request).
  void InterTokenLatency(double seconds);
  // A request that finished: its prefill time (first scheduled to first
  // token), decode time (first token to last), and its prompt and
  // generation lengths.
  void RequestPhases(double prefill_seconds, double decode_seconds, double prompt_tokens,
                     double generation_tokens);
  void Step(uint32_t group, StepMode mode, bool switched, double tokens, double seconds);
  // How long a busy group waited for the router between two steps: from
  // its last result to the next plan sent (the step loop's own work;
  // streaming runs on the output threads).
  void RouterOverhead(double seconds);
  void Preemptions(double count);
  // The cost policy's prediction for a step and the time it took.
  void CostPrediction(double predicted_seconds, double measured_seconds);
  void SetLoad(uint32_t group, double queued, double running, double blocks_used,
               double blocks_total, double blocks_cached);
  void PrefixCacheHits(double tokens);
  void PrefixCacheQueries(double tokens);
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
  prometheus::Family<prometheus::Histogram> *step_tokens_, *step_duration_;
  prometheus::Counter *prompt_tokens_, *generation_tokens_, *preemptions_, *cache_hits_,
      *auth_failures_;
  prometheus::Histogram *ttft_, *tpot_, *e2e_, *queue_time_, *overhead_, *prediction_error_, *itl_,
      *prefill_time_, *decode_time_, *prompt_length_, *generation_length_;
  prometheus::Counter *cache_queries_;
  prometheus::Counter *predicted_seconds_, *measured_seconds_;
};

}  // namespace shift
