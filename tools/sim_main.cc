// shift-sim: what shift would do with a workload on hardware this machine
// does not have. It runs the router's own core loop (scheduler, prefix
// cache, chunked prefill, preemption, shift policy) on a virtual clock, with
// each step priced by a cost model of the model on a hardware profile
// (sim/), and reports as shift-bench does, from the same workload flags.
// --fit_profile turns measured step traces into a hardware profile
// (calibration); --sweep_threshold finds the best threshold for a workload.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/defaults.h"
#include "common/model_config.h"
#include "common/status.h"
#include "core/step_loop.h"
#include "core/target_flags.h"
#include "nlohmann/json.hpp"
#include "sim/cost_model.h"
#include "sim/fit.h"
#include "sim/hardware_profile.h"
#include "sim/simulator.h"
#include "workload/plots.h"
#include "workload/workload.h"
#include "workload/workload_flags.h"

ABSL_FLAG(std::string, model, "",
          "The model: a directory with config.json, or a config.json file (weights are not read)");
ABSL_FLAG(std::string, hardware, "",
          "Hardware profile (JSON; bench/sim/hardware/ has H100, H200 and the local CPU cluster)");
ABSL_FLAG(
    std::vector<std::string>, set, {},
    "Override profile numbers: PATH=VALUE,... (e.g. gemm_efficiency.fp8=0.6); reported as set "
    "on the command line");
ABSL_FLAG(std::string, policy, "threshold", "Shift policy: threshold, cost, tp or sp");
ABSL_FLAG(std::string, compare, "",
          "Simulate each configuration in turn and compare: tp, sp, threshold, cost (one group "
          "of --world_size ranks with that policy), shift (--policy) and dp (--world_size "
          "groups of one rank)");
ABSL_FLAG(int64_t, shift_threshold, shift::defaults::kShiftThreshold,
          "threshold and cost policies: SP above this many tokens per step");
ABSL_FLAG(int32_t, world_size, 0, "Ranks per group (0: the profile's device count)");
ABSL_FLAG(int32_t, groups, 1, "Data-parallel groups of --world_size ranks");
ABSL_FLAG(int32_t, sp_degree, 0,
          "SP mode's sp (0: --world_size, pure Ulysses; k: the hybrid (k, P/k) base)");
ABSL_FLAG(std::string, weights, "auto",
          "replicated (every rank holds what SP needs), sharded (a TP-only server: 1/P each), or "
          "auto (sharded for --policy=tp, else replicated)");
ABSL_FLAG(int64_t, max_num_batched_tokens, shift::defaults::kMaxNumBatchedTokens,
          "Tokens per step, all sequences");
ABSL_FLAG(int64_t, max_num_seqs, shift::defaults::kMaxNumSeqs, "Sequences per step");
ABSL_FLAG(int64_t, max_model_len, 0, "Prompt + max_tokens per request (0: the model's context)");
ABSL_FLAG(int64_t, block_size, shift::defaults::kBlockSize, "Tokens per KV block");
ABSL_FLAG(int64_t, num_blocks, 0, "KV blocks per group (0: what the profile's memory holds)");
ABSL_FLAG(bool, enable_prefix_caching, true, "Reuse cached KV of shared prompt prefixes");
ABSL_FLAG(int64_t, max_queued_requests, shift::defaults::kMaxQueuedRequests,
          "Waiting requests before RESOURCE_EXHAUSTED, all groups");
ABSL_FLAG(double, step_time_s, 0,
          "Price every step at this many seconds instead of the cost model (a fixed oracle; "
          "needs --num_blocks unless --hardware is given)");
ABSL_FLAG(std::string, compute_profile, "",
          "Per-rank compute from a measured profile (shift-generate --compute_profile JSONL) "
          "instead of the model and hardware");
ABSL_FLAG(std::string, requests_jsonl, "",
          "Run these requests instead of --workload: shift-generate's --requests JSONL "
          "(prompt_ids, max_tokens, arrive_before_step, after_step_ended), each queued before "
          "its step (with after_step_ended, only once the step before has ended)");
ABSL_FLAG(std::string, step_trace, "", "Write each step as a JSON line (the router's format)");
ABSL_FLAG(bool, async_scheduling, false,
          "Plan each step while the one before runs, as shift-router does by default: the "
          "profile's loop overhead is hidden behind the running step (off by default, as the "
          "published system ran and bench/sim's results were made)");
ABSL_FLAG(std::string, json_out, "", "Write the report(s) as JSON here");
ABSL_FLAG(std::string, plot_dir, "", "Write plot data and PNGs (gnuplot) here");
ABSL_FLAG(std::string, sweep_threshold, "",
          "Simulate the threshold policy at each of these thresholds (comma-separated) and name "
          "the best by --sweep_metric");
ABSL_FLAG(std::string, sweep_metric, "e2e_mean",
          "--sweep_threshold's aim: e2e_mean, ttft_p90, tpot_p90 (lowest) or throughput, goodput "
          "(highest)");
ABSL_FLAG(std::string, fit_profile, "",
          "Calibrate: fit --hardware's compute, bandwidth, collective and overhead numbers to "
          "these measured step traces (comma-separated router --step_trace files of --model on "
          "--world_size ranks) and write the profile to --profile_out");
ABSL_FLAG(std::string, profile_out, "", "--fit_profile: where to write the fitted profile");
ABSL_FLAG(std::string, fit_source, "",
          "--fit_profile: the source written for each fitted number (the command that measured "
          "the traces)");

namespace shift {
namespace {

using sim::CostModel;
using sim::HardwareProfile;

// --max_model_len, or the model's context.
int64_t MaxModelLen(const ModelConfig& model) {
  return absl::GetFlag(FLAGS_max_model_len) > 0 ? absl::GetFlag(FLAGS_max_model_len)
                                                : model.max_position_embeddings;
}

absl::StatusOr<ModelConfig> LoadModel() {
  const std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) return absl::InvalidArgumentError("--model is required");
  if (std::filesystem::is_directory(path)) return LoadModelConfig(path);
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--model: cannot read \"", path, "\""));
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  return ParseModelConfig(text, path);
}

absl::StatusOr<std::optional<HardwareProfile>> LoadHardware() {
  const std::string path = absl::GetFlag(FLAGS_hardware);
  if (path.empty()) return std::optional<HardwareProfile>();
  SHIFT_ASSIGN_OR_RETURN(HardwareProfile hw, sim::LoadHardwareProfile(path));
  for (const std::string& item : absl::GetFlag(FLAGS_set)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    double value = 0;
    if (!absl::SimpleAtod(kv.second, &value)) {
      return absl::InvalidArgumentError(absl::StrCat("--set: \"", item, "\" is not PATH=NUMBER"));
    }
    SHIFT_RETURN_IF_ERROR(sim::SetProfileValue(&hw, kv.first, value, "set on the command line"));
  }
  return std::optional<HardwareProfile>(std::move(hw));
}

// One configuration to simulate.
struct Config {
  std::string name;
  std::string policy;
  int world_size = 1;
  uint32_t groups = 1;
};

absl::StatusOr<Config> ConfigNamed(const std::string& name, int world) {
  Config c{name, name, world, static_cast<uint32_t>(absl::GetFlag(FLAGS_groups))};
  if (name == "shift") {
    c.policy = absl::GetFlag(FLAGS_policy);
  } else if (name == "dp") {
    c.policy = "tp";
    c.groups = static_cast<uint32_t>(world) * c.groups;
    c.world_size = 1;
  } else if (name != "tp" && name != "sp" && name != "threshold" && name != "cost") {
    return absl::InvalidArgumentError(absl::StrCat("unknown configuration \"", name,
                                                   "\": use tp, sp, threshold, cost, shift or dp"));
  }
  return c;
}

struct Run {
  Config config;
  sim::SimResult result;
  workload::Report report;
  double wall_s = 0;
  std::optional<sim::StepCost> sample_prefill, sample_decode;
};

// Requests of --requests_jsonl and their steps.
absl::StatusOr<std::vector<workload::Request>> ReadRequestsJsonl(
    const std::string& path, std::vector<sim::StepArrival>* arrivals) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--requests_jsonl: cannot read \"", path, "\""));
  std::vector<workload::Request> requests;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const std::string where = absl::StrCat(path, ":", n, ": ");
    if (!j.is_object() || !j.contains("prompt_ids")) {
      return absl::InvalidArgumentError(where + "needs a JSON object with \"prompt_ids\"");
    }
    try {
      workload::Request r;
      r.prompt = j["prompt_ids"].get<std::vector<int32_t>>();
      r.max_tokens = j.value("max_tokens", 16u);
      requests.push_back(std::move(r));
      arrivals->push_back(
          {j.value("arrive_before_step", int64_t{1}), j.value("after_step_ended", false)});
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(where + e.what());
    }
  }
  // Queued in step order, as shift-generate queues them.
  std::vector<size_t> order(requests.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return (*arrivals)[a].before_step < (*arrivals)[b].before_step;
  });
  std::vector<workload::Request> sorted;
  std::vector<sim::StepArrival> sorted_arrivals;
  for (size_t i : order) {
    sorted.push_back(std::move(requests[i]));
    sorted_arrivals.push_back((*arrivals)[i]);
  }
  *arrivals = std::move(sorted_arrivals);
  return sorted;
}

absl::StatusOr<Run> Simulate(const Config& config, const ModelConfig& model,
                             const std::optional<HardwareProfile>& hw,
                             const std::optional<sim::ComputeLaw>& law,
                             std::vector<workload::Request> requests,
                             const std::vector<sim::StepArrival>* arrivals, StepTrace* trace,
                             int64_t threshold) {
  Run run;
  run.config = config;
  sim::SimOptions o;
  o.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  o.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  o.scheduler.max_model_len = MaxModelLen(model);
  o.scheduler.block_size = absl::GetFlag(FLAGS_block_size);
  o.scheduler.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  o.num_groups = config.groups;
  o.policy = config.policy;
  o.threshold = threshold;
  o.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  o.vocab_size = static_cast<int32_t>(model.vocab_size);
  o.trace = trace;
  o.plan_ahead = absl::GetFlag(FLAGS_async_scheduling);
  SHIFT_ASSIGN_OR_RETURN(const LatencyTargetFlagValues targets, LatencyTargetFlags());
  o.tpot_slo_s = targets.tpot_ms / 1e3;
  o.ttft_slo_s = targets.ttft_ms / 1e3;
  o.concurrency = workload::ClosedLoopConcurrency();
  o.duration_s = workload::WorkloadDuration();
  const int32_t vocab = o.vocab_size;
  o.closed_loop_prompt = [vocab](uint64_t i) { return workload::ClosedLoopPrompt(vocab, i); };
  sim::StepTimer timer;
  std::optional<CostModel> cost;
  if (hw) {
    std::string weights = absl::GetFlag(FLAGS_weights);
    if (weights == "auto") weights = config.policy == "tp" ? "sharded" : "replicated";
    if (weights != "sharded" && weights != "replicated") {
      return absl::InvalidArgumentError("--weights must be auto, replicated or sharded");
    }
    const int sp_degree = absl::GetFlag(FLAGS_sp_degree) > 0
                              ? std::min(absl::GetFlag(FLAGS_sp_degree), config.world_size)
                              : config.world_size;
    SHIFT_ASSIGN_OR_RETURN(
        cost, CostModel::Make(model, *hw, config.world_size, sp_degree, weights == "replicated"));
    if (law) {
      if (law->world_size != config.world_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("--compute_profile was measured for P = ", law->world_size, ", not ",
                         config.world_size));
      }
      cost->set_compute_law(*law);
    }
    SHIFT_ASSIGN_OR_RETURN(o.scheduler.num_blocks, cost->NumBlocks(o.scheduler.block_size));
    o.loop_overhead_s = hw->loop_overhead_s;
    o.switch_overhead_s = hw->switch_overhead_s;
  }
  if (absl::GetFlag(FLAGS_num_blocks) > 0) o.scheduler.num_blocks = absl::GetFlag(FLAGS_num_blocks);
  if (o.scheduler.num_blocks < 1) {
    return absl::InvalidArgumentError("without --hardware, --num_blocks is required");
  }
  if (const double fixed = absl::GetFlag(FLAGS_step_time_s); fixed > 0) {
    timer = [fixed](const SchedulerOutput&, StepMode) { return fixed; };
  } else if (cost) {
    const CostModel* model_cost = &*cost;
    timer = [model_cost](const SchedulerOutput& step, StepMode mode) {
      return model_cost->Price(sim::ChunksOf(step), mode).total_s();
    };
  } else {
    return absl::InvalidArgumentError("needs --hardware=PROFILE (or --step_time_s)");
  }
  const auto start = std::chrono::steady_clock::now();
  SHIFT_ASSIGN_OR_RETURN(run.result, sim::Simulate(o, std::move(requests), timer, arrivals));
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.report = workload::MakeReportFromFlags(run.result.outcomes);
  return run;
}

std::string Summary(const Run& run) {
  const sim::SimResult& r = run.result;
  return absl::StrFormat(
      "%d steps (%d tp, %d sp, %d switches), %d preemptions, %d KV blocks per group; "
      "simulated %.1f s in %.2f s\n",
      r.steps, r.tp_steps, r.sp_steps, r.switches, r.preemptions, r.num_blocks, r.end_s,
      run.wall_s);
}

nlohmann::json RunJson(const Run& run) {
  nlohmann::json j = workload::ReportJson(run.report);
  const sim::SimResult& r = run.result;
  j["configuration"] = run.config.name;
  j["policy"] = run.config.policy;
  j["world_size"] = run.config.world_size;
  j["groups"] = run.config.groups;
  j["steps"] = {
      {"total", r.steps}, {"tp", r.tp_steps}, {"sp", r.sp_steps}, {"switches", r.switches}};
  j["preemptions"] = r.preemptions;
  j["kv_blocks_per_group"] = r.num_blocks;
  j["simulated_seconds"] = r.end_s;
  j["wall_seconds"] = run.wall_s;
  return j;
}

// Reads `metric` of a report; lower is better unless `higher`.
double Metric(const workload::Report& r, const std::string& metric, bool* higher) {
  *higher = metric == "throughput" || metric == "goodput";
  if (metric == "e2e_mean") return r.e2e.mean;
  if (metric == "ttft_p90") return r.ttft.p90;
  if (metric == "tpot_p90") return r.tpot.p90;
  if (metric == "throughput") return r.total_token_throughput;
  return r.goodput;
}

// --fit_profile: the profile's numbers that make the cost model best match
// the measured steps (non-negative least squares on relative errors).
int FitProfile(const ModelConfig& model, HardwareProfile hw) {
  const int world = absl::GetFlag(FLAGS_world_size) > 0 ? absl::GetFlag(FLAGS_world_size) : hw.gpus;
  // Compute and memory add on a CPU: the step time is linear in the
  // features, one coefficient each.
  hw.overlap = false;
  auto cost = CostModel::Make(model, hw, world, world, /*replicated_weights=*/true);
  if (!cost.ok()) return ReportFailure(cost.status());
  std::vector<std::vector<double>> rows;
  std::vector<double> seconds;
  std::vector<double> gaps;
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_fit_profile), ',')) {
    std::ifstream in{std::string(path)};
    if (!in) return ReportFailure(absl::NotFoundError(absl::StrCat("cannot read ", path)));
    std::string line;
    double last_end = -1;
    std::optional<StepMode> last_mode;  // of the previous step in this trace
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains("seqs")) continue;
      std::vector<sim::Chunk> chunks;
      std::map<int64_t, bool> samples;
      for (const auto& t : j["sampled"]) samples[t[0].get<int64_t>()] = true;
      for (const auto& s : j["seqs"]) {
        chunks.push_back(
            {s[1].get<int64_t>(), s[2].get<int64_t>(), samples.contains(s[0].get<int64_t>())});
      }
      const StepMode mode =
          j["mode"] == "sp" ? StepMode::kSequenceParallel : StepMode::kTensorParallel;
      const sim::Features f = cost->FeaturesOf(chunks, mode);
      rows.emplace_back(f.begin(), f.end());
      // One more feature: the step's mode differs from the previous one's.
      rows.back().push_back(last_mode && *last_mode != mode ? 1.0 : 0.0);
      last_mode = mode;
      const double measured = j["measured_s"].get<double>();
      seconds.push_back(measured);
      // The loop's gap: from the previous step's end to this one's start,
      // when it went straight on ("t" is when the step was finished).
      const double t = j["t"].get<double>();
      // (A step with arrivals may follow an idle loop: not a gap.)
      if (last_end >= 0 && j["arrived"].empty()) {
        gaps.push_back(std::max(0.0, t - measured - last_end));
      }
      last_end = t;
    }
  }
  if (rows.size() < 2 * (sim::kNumFeatures + 1)) {
    return ReportFailure(absl::InvalidArgumentError(
        absl::StrCat("--fit_profile: ", rows.size(), " steps are too few to fit ",
                     static_cast<int>(sim::kNumFeatures) + 1, " numbers")));
  }
  const std::vector<double> theta = sim::FitNonNegative(rows, seconds, /*relative=*/true);
  // Relative error of the fit, for the report.
  std::vector<double> errors;
  for (size_t i = 0; i < rows.size(); ++i) {
    double predicted = 0;
    for (size_t k = 0; k < theta.size(); ++k) predicted += rows[i][k] * theta[k];
    errors.push_back(std::fabs(predicted - seconds[i]) / seconds[i]);
  }
  std::sort(errors.begin(), errors.end());
  std::sort(gaps.begin(), gaps.end());
  // Coefficients back to profile numbers. A coefficient the fit left at 0
  // is a cost the steps did not show: priced as (almost) free.
  auto inverse = [](double t) { return 1 / std::max(t, 1e-18); };
  // GEMM and attention FLOP rates; one the fit found (almost) free is
  // priced 1000 times faster than the other, so both efficiencies stay
  // within (0, 1] of the faster.
  const double tg = theta[sim::kGemmFlops], ta = theta[sim::kAttentionFlops];
  const double gemm = inverse(std::max(tg, 1e-3 * ta));
  const double attention = inverse(std::max(ta, 1e-3 * tg));
  const double peak = std::max(gemm, attention);
  const std::string source =
      absl::GetFlag(FLAGS_fit_source).empty()
          ? absl::StrCat("fitted by shift-sim --fit_profile to ", rows.size(), " measured steps")
          : absl::GetFlag(FLAGS_fit_source);
  const std::string type = cost->gemm_type();
  std::map<std::string, double> fitted = {
      {"peak_flops." + type, peak},
      {"gemm_efficiency." + type, gemm / peak},
      {"gemm_half_rows", theta[sim::kGemmFlopsPerRow] * gemm},
      {"attention_efficiency", attention / peak},
      {"memory_bandwidth", inverse(theta[sim::kBytes])},
      {"bandwidth_efficiency", 1},
      {"all_reduce.latency_s", theta[sim::kAllReduces]},
      {"all_reduce.bus_bandwidth", inverse(theta[sim::kAllReduceBytes])},
      {"all_to_all.latency_s", theta[sim::kAllToAlls]},
      {"all_to_all.bus_bandwidth", inverse(theta[sim::kAllToAllBytes])},
      {"gather.latency_s", theta[sim::kAllToAlls]},
      {"gather.bus_bandwidth", inverse(theta[sim::kAllToAllBytes])},
      {"step_overhead_s", theta[sim::kOne]},
      {"layer_overhead_s", 0},
      {"loop_overhead_s", gaps.empty() ? 0 : gaps[gaps.size() / 2]},
      {"switch_overhead_s", theta[sim::kNumFeatures]},
  };
  hw.peak_flops[type] = 0;
  hw.gemm_efficiency[type] = 0;
  for (const auto& [path, value] : fitted) {
    const absl::Status set = sim::SetProfileValue(&hw, path, std::min(value, 1e18), source);
    if (!set.ok()) return ReportFailure(set);
  }
  hw.overlap = false;
  hw.sources["overlap"] = "a CPU's loops do not overlap compute and memory traffic";
  nlohmann::json j = sim::HardwareProfileJson(hw);
  j["fit"] = {{"steps", rows.size()},
              {"median_relative_error", errors[errors.size() / 2]},
              {"p90_relative_error", errors[errors.size() * 9 / 10]}};
  const std::string out = absl::GetFlag(FLAGS_profile_out);
  if (out.empty()) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::ofstream(out) << j.dump(2) << "\n";
  }
  std::fprintf(stderr, "coefficients:");
  for (double t : theta) std::fprintf(stderr, " %.4g", t);
  std::fprintf(stderr, "\n");
  std::fprintf(stderr, "fitted %zu steps: median relative error %.1f%%, p90 %.1f%%\n", rows.size(),
               100 * errors[errors.size() / 2], 100 * errors[errors.size() * 9 / 10]);
  return 0;
}

int Main() {
  auto model = LoadModel();
  if (!model.ok()) return ReportFailure(model.status());
  auto hw = LoadHardware();
  if (!hw.ok()) return ReportFailure(hw.status());
  if (!absl::GetFlag(FLAGS_fit_profile).empty()) {
    if (!*hw) return ReportFailure(absl::InvalidArgumentError("--fit_profile needs --hardware"));
    return FitProfile(*model, **hw);
  }
  std::optional<sim::ComputeLaw> law;
  if (const std::string path = absl::GetFlag(FLAGS_compute_profile); !path.empty()) {
    auto loaded = sim::LoadComputeProfile(path);
    if (!loaded.ok()) return ReportFailure(loaded.status());
    law = *loaded;
  }
  const int world = absl::GetFlag(FLAGS_world_size) > 0 ? absl::GetFlag(FLAGS_world_size)
                    : *hw                               ? (*hw)->gpus
                                                        : 1;
  std::vector<sim::StepArrival> arrivals;
  const bool by_step = !absl::GetFlag(FLAGS_requests_jsonl).empty();
  const int64_t max_len = MaxModelLen(*model);
  auto requests =
      by_step ? ReadRequestsJsonl(absl::GetFlag(FLAGS_requests_jsonl), &arrivals)
              : workload::BuildWorkloadFromFlags(static_cast<int32_t>(model->vocab_size), max_len);
  if (!requests.ok()) return ReportFailure(requests.status());

  // The configurations, and the thresholds each runs at.
  std::vector<std::pair<Config, int64_t>> plan;
  const int64_t threshold = absl::GetFlag(FLAGS_shift_threshold);
  if (const std::string sweep = absl::GetFlag(FLAGS_sweep_threshold); !sweep.empty()) {
    for (absl::string_view t : absl::StrSplit(sweep, ',')) {
      int64_t value = 0;
      if (!absl::SimpleAtoi(t, &value) || value < 0) {
        return ReportFailure(absl::InvalidArgumentError(
            absl::StrCat("--sweep_threshold: \"", t, "\" is not a token count")));
      }
      Config c{absl::StrCat("threshold=", value), "threshold", world,
               static_cast<uint32_t>(absl::GetFlag(FLAGS_groups))};
      plan.push_back({c, value});
    }
  } else if (const std::string compare = absl::GetFlag(FLAGS_compare); !compare.empty()) {
    for (absl::string_view name : absl::StrSplit(compare, ',')) {
      auto c = ConfigNamed(std::string(name), world);
      if (!c.ok()) return ReportFailure(c.status());
      plan.push_back({*c, threshold});
    }
  } else {
    Config c{absl::GetFlag(FLAGS_policy), absl::GetFlag(FLAGS_policy), world,
             static_cast<uint32_t>(absl::GetFlag(FLAGS_groups))};
    plan.push_back({c, threshold});
  }
  if (by_step && plan.size() > 1) {
    return ReportFailure(absl::InvalidArgumentError("--requests_jsonl runs one configuration"));
  }
  std::unique_ptr<StepTrace> trace;
  if (const std::string path = absl::GetFlag(FLAGS_step_trace); !path.empty() && plan.size() == 1) {
    auto opened = StepTrace::Open(path);
    if (!opened.ok()) return ReportFailure(opened.status());
    trace = *std::move(opened);
  }
  const std::string plot_dir = absl::GetFlag(FLAGS_plot_dir);
  std::vector<Run> runs;
  nlohmann::json all = nlohmann::json::object();
  for (const auto& [config, t] : plan) {
    auto run = Simulate(config, *model, *hw, law, *requests, by_step ? &arrivals : nullptr,
                        trace.get(), t);
    if (!run.ok()) {
      return ReportFailure(absl::Status(run.status().code(),
                                        absl::StrCat(config.name, ": ", run.status().message())));
    }
    if (plan.size() > 1) std::printf("== %s\n", config.name.c_str());
    std::printf("%s%s", workload::ReportTable(run->report).c_str(), Summary(*run).c_str());
    if (!plot_dir.empty()) {
      const std::string dir = plan.size() > 1 ? plot_dir + "/" + config.name : plot_dir;
      const absl::Status plotted = workload::WritePlots(dir, "shift-sim " + config.name,
                                                        run->result.outcomes, run->result.modes);
      if (!plotted.ok()) std::fprintf(stderr, "plots: %s\n", plotted.ToString().c_str());
    }
    all[config.name] = RunJson(*run);
    runs.push_back(*std::move(run));
  }
  if (plan.size() > 1) {
    std::printf(
        "\n| configuration | TTFT p50 | TPOT p50 | E2E mean | tokens/s (prompt + "
        "generated) | steps tp/sp |\n|---|---|---|---|---|---|\n");
    for (const Run& run : runs) {
      std::printf("| %s | %.1f ms | %.2f ms | %.3f s | %.0f | %lld/%lld |\n",
                  run.config.name.c_str(), 1000 * run.report.ttft.p50, 1000 * run.report.tpot.p50,
                  run.report.e2e.mean, run.report.total_token_throughput,
                  static_cast<long long>(run.result.tp_steps),
                  static_cast<long long>(run.result.sp_steps));
    }
  }
  if (!absl::GetFlag(FLAGS_sweep_threshold).empty()) {
    const std::string metric = absl::GetFlag(FLAGS_sweep_metric);
    bool higher = false;
    const Run* best = nullptr;
    double best_value = 0;
    for (const Run& run : runs) {
      const double v = Metric(run.report, metric, &higher);
      if (best == nullptr || (higher ? v > best_value : v < best_value)) {
        best = &run;
        best_value = v;
      }
    }
    std::printf("best by %s: %s (%.6g)\n", metric.c_str(), best->config.name.c_str(), best_value);
    all["best"] = {{"metric", metric}, {"configuration", best->config.name}, {"value", best_value}};
  }
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    nlohmann::json j = plan.size() == 1 ? all[plan[0].first.name] : all;
    j["workload"] = by_step ? "requests_jsonl" : workload::WorkloadName();
    j["model"] = absl::GetFlag(FLAGS_model);
    if (*hw) j["hardware"] = sim::HardwareProfileJson(**hw);
    if (plan.size() == 1) j["outcomes"] = workload::OutcomesJson(runs[0].result.outcomes);
    std::ofstream(path) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(argc, argv,
                     "Simulates shift's core loop on a virtual clock with a cost model of the "
                     "model on a hardware profile, for a workload or a trace, and reports TTFT, "
                     "TPOT and throughput as shift-bench does.",
                     "shift-sim --model=DIR|config.json --hardware=PROFILE.json "
                     "[--workload=poisson|closed|burst|trace ...] [--policy=...|--compare=...|"
                     "--sweep_threshold=...]\n"
                     "shift-sim --model=... --hardware=TEMPLATE.json --fit_profile=steps.jsonl,... "
                     "--profile_out=PROFILE.json");
  return shift::Main();
}
