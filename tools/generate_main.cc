// shift-generate: offline generation on one CPU rank, no server. It runs the
// core step loop (core/step_loop.h) that the router runs, with the same
// scheduler, chunked prefill, preemption and shift policy, over an engine
// in this process: given the same requests arriving before the same steps,
// it writes the router's step trace. It streams the first request's text
// and prints prefill and decode throughput; --requests runs a JSONL file of
// requests and prints each one's tokens as JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/defaults.h"
#include "common/detokenizer.h"
#include "common/file_util.h"
#include "common/status.h"
#include "core/clock.h"
#include "core/scheduler.h"
#include "core/shift_policy.h"
#include "core/step_loop.h"
#include "core/target_flags.h"
#include "kernels/backends.h"
#include "nlohmann/json.hpp"
#include "worker/compute_profile.h"
#include "worker/emulated_communicator.h"
#include "worker/engine.h"
#include "worker/engine_flags.h"
#include "worker/local_executor.h"

ABSL_FLAG(std::string, model, "", "Model directory in the Hugging Face layout (required)");
ABSL_FLAG(std::string, prompt, "Once upon a time",
          "Prompt text (with the special tokens the model's files say a text prompt gets)");
ABSL_FLAG(int64_t, prompt_tokens, 0,
          "Use this many random token ids as the prompt instead of --prompt (benchmarks)");
ABSL_FLAG(std::string, prompt_ids, "", "Prompt as comma-separated token ids (overrides --prompt)");
ABSL_FLAG(int64_t, max_tokens, 32, "Tokens to generate per sequence");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past the end-of-sequence token");
ABSL_FLAG(bool, async_scheduling, false,
          "Plan each step before the previous one's results, its decodes carrying pending "
          "tokens the engine resolves (the router's overlap with the running step; the same "
          "tokens either way)");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling threshold");
ABSL_FLAG(int32_t, top_k, 0, "Keep the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (request i of a batch uses seed + i)");
ABSL_FLAG(int64_t, batch, 1, "Requests generated together (copies of the prompt)");
ABSL_FLAG(std::string, requests, "",
          "Run these requests instead of --prompt/--batch: a JSONL file, one object a line with "
          "\"prompt\" (text) or \"prompt_ids\", and optionally \"max_tokens\", \"temperature\", "
          "\"top_p\", \"top_k\", \"seed\", \"ignore_eos\", \"arrive_before_step\" (queued "
          "just before that step is scheduled; default 1, as the \"arrived\" field of a step "
          "trace says) and \"after_step_ended\" (with --async_scheduling, queued only once the "
          "step before has ended, not while it runs: a router's trace says so with \"ahead\" "
          "false). Prints one JSON line per request with its tokens");
ABSL_FLAG(int64_t, max_num_batched_tokens, shift::defaults::kMaxNumBatchedTokens,
          "Most tokens scheduled in one step (prompts are prefilled in chunks of at most this)");
ABSL_FLAG(int64_t, max_num_seqs, shift::defaults::kMaxNumSeqs, "Most sequences in one step");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "Reuse the KV of full blocks shared with earlier prompts (same bits as computing them)");
ABSL_FLAG(std::string, shift_policy, "threshold",
          "How each step's mode is chosen (threshold, cost, tp, sp); on one rank both modes "
          "compute the same, but the step trace records the choice");
ABSL_FLAG(int64_t, shift_threshold, shift::defaults::kShiftThreshold,
          "Scheduled tokens above which a step runs in SP");
ABSL_FLAG(int64_t, kv_cache_bytes, shift::defaults::kKvCacheBytes,
          "Bytes for the KV cache of all layers (too few for the batch: requests are preempted "
          "and recomputed, as in the router)");
ABSL_FLAG(int64_t, block_size, shift::defaults::kBlockSize, "Tokens per KV block");
ABSL_FLAG(std::string, device, shift::defaults::kDevice,
          "Compute device: cpu (the deterministic fp32 reference) or cuda (bf16 on a GPU)");
ABSL_FLAG(int32_t, emulate_world_size, 1,
          "Run rank --emulate_rank's share of every step of a group of this many ranks, alone: "
          "each collective becomes a copy of the same size, timed apart (tokens are then "
          "stand-ins; step times are that rank's)");
ABSL_FLAG(int32_t, emulate_rank, 0, "The rank --emulate_world_size runs");
ABSL_FLAG(int32_t, emulate_sp_degree, 0,
          "The emulated group's base-mode Ulysses degree (shift-router --sp_degree): the rank "
          "holds its 1/(world / sp) shard; 0: --emulate_world_size (pure SP)");
ABSL_FLAG(std::string, compute_profile, "",
          "Append a JSON line per step here: its mode and shape, the step's seconds, the "
          "collectives' seconds and bytes, and compute = step - collectives (for shift-sim)");
ABSL_FLAG(bool, op_stats, false,
          "Print, before the step figures on stderr, where the engine's time and traffic went: "
          "calls, FLOPs, bytes and seconds of each backend operation (on a GPU, device time "
          "between CUDA events around each operation; no CUDA graphs then)");
ABSL_FLAG(int32_t, threads, shift::defaults::kThreads,
          "GEMM threads (results do not depend on it)");
ABSL_FLAG(std::string, step_trace, "",
          "Append a JSON line per step here, as the router's --step_trace does");
ABSL_FLAG(std::string, dump_logits, "",
          "Write the first request's prompt ids, generated ids and the full logits row each token "
          "was sampled from to this JSON file (for comparison with an independent "
          "implementation)");
ABSL_FLAG(bool, print_ids, false,
          "Print the first request's generated token ids (space-separated) instead of its text");

namespace shift {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// {"prompt_ids": [...], "generated_ids": [...], "logits": [[vocab floats], ...]}:
// logits[i] is the row generated_ids[i] was sampled from.
absl::Status WriteLogits(const std::string& path, const std::vector<int32_t>& prompt,
                         const std::vector<std::pair<int32_t, std::vector<float>>>& dumped) {
  std::string json =
      absl::StrCat("{\"prompt_ids\": [", absl::StrJoin(prompt, ","), "],\n\"generated_ids\": [");
  for (size_t i = 0; i < dumped.size(); ++i) absl::StrAppend(&json, i ? "," : "", dumped[i].first);
  absl::StrAppend(&json, "],\n\"logits\": [");
  for (size_t i = 0; i < dumped.size(); ++i) {
    absl::StrAppend(&json, i ? ",\n" : "", "[");
    for (size_t v = 0; v < dumped[i].second.size(); ++v) {
      // %.9g round-trips a float exactly.
      absl::StrAppend(&json, v ? "," : "", absl::StrFormat("%.9g", dumped[i].second[v]));
    }
    absl::StrAppend(&json, "]");
  }
  absl::StrAppend(&json, "]}\n");
  return WriteStringToFile(path, json);
}

// A request to run, and the step before which it arrives.
struct Planned {
  std::unique_ptr<Request> request;
  int64_t arrive_before_step = 1;
  bool after_step_ended = false;  // not queued while the step before runs
};

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text, int64_t vocab) {
  std::vector<int32_t> ids;
  for (absl::string_view id : absl::StrSplit(text, ',')) {
    int32_t value = 0;
    if (!absl::SimpleAtoi(id, &value) || value < 0 || value >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", id, "\" is not a token id of this model"));
    }
    ids.push_back(value);
  }
  return ids;
}

// Requests from --requests (JSONL), or --batch copies of the prompt flags.
absl::StatusOr<std::vector<Planned>> LoadRequests(const Tokenizer& tokenizer,
                                                  const ModelConfig& config) {
  RequestParams defaults;
  defaults.max_tokens =
      static_cast<uint32_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_tokens)));
  defaults.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  defaults.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  defaults.top_k = absl::GetFlag(FLAGS_top_k);
  defaults.seed = absl::GetFlag(FLAGS_seed);
  defaults.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  for (int64_t eos : config.eos_token_ids)
    defaults.eos_token_ids.push_back(static_cast<int32_t>(eos));
  std::vector<Planned> planned;
  if (const std::string path = absl::GetFlag(FLAGS_requests); !path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("--requests: cannot read \"", path, "\""));
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = absl::StrCat(path, ":", line_no, ": ");
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) return absl::InvalidArgumentError(where + "not a JSON object");
      Planned p;
      p.request = std::make_unique<Request>();
      RequestParams& r = p.request->params = defaults;
      try {
        if (j.contains("prompt_ids")) {
          p.request->prompt = j["prompt_ids"].get<std::vector<int32_t>>();
        } else if (j.contains("prompt")) {
          SHIFT_ASSIGN_OR_RETURN(
              p.request->prompt,
              tokenizer.EncodePrompt(j["prompt"].get<std::string>(), /*parse_special=*/false,
                                     /*add_special_tokens=*/true));
        } else {
          return absl::InvalidArgumentError(where + "needs \"prompt\" or \"prompt_ids\"");
        }
        r.max_tokens = j.value("max_tokens", r.max_tokens);
        r.temperature = j.value("temperature", r.temperature);
        r.top_p = j.value("top_p", r.top_p);
        r.top_k = j.value("top_k", r.top_k);
        r.seed = j.value("seed", r.seed);
        r.ignore_eos = j.value("ignore_eos", r.ignore_eos);
        p.arrive_before_step = j.value("arrive_before_step", int64_t{1});
        p.after_step_ended = j.value("after_step_ended", false);
      } catch (const nlohmann::json::exception& e) {
        return absl::InvalidArgumentError(where + e.what());
      }
      for (int32_t id : p.request->prompt) {
        if (id < 0 || id >= config.vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, "prompt token ", id, " is not an id of this model"));
        }
      }
      planned.push_back(std::move(p));
    }
    if (planned.empty()) return absl::InvalidArgumentError("--requests: the file has no request");
    return planned;
  }
  std::vector<int32_t> prompt;
  if (const std::string ids = absl::GetFlag(FLAGS_prompt_ids); !ids.empty()) {
    auto parsed = ParseIds(ids, config.vocab_size);
    if (!parsed.ok())
      return absl::InvalidArgumentError(absl::StrCat("--prompt_ids: ", parsed.status().message()));
    prompt = *std::move(parsed);
  } else if (const int64_t n = absl::GetFlag(FLAGS_prompt_tokens); n > 0) {
    std::mt19937 rng(1);
    for (int64_t i = 0; i < n; ++i) {
      prompt.push_back(static_cast<int32_t>(rng() % tokenizer.vocab_size()));
    }
  } else {
    SHIFT_ASSIGN_OR_RETURN(
        prompt, tokenizer.EncodePrompt(absl::GetFlag(FLAGS_prompt), /*parse_special=*/false,
                                       /*add_special_tokens=*/true));
  }
  for (int64_t b = 0; b < absl::GetFlag(FLAGS_batch); ++b) {
    Planned p;
    p.request = std::make_unique<Request>();
    p.request->prompt = prompt;
    p.request->params = defaults;
    p.request->params.seed = defaults.seed + static_cast<uint64_t>(b);
    planned.push_back(std::move(p));
  }
  if (planned.empty()) return absl::InvalidArgumentError("--batch must be at least 1");
  return planned;
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return ReportFailure(absl::InvalidArgumentError("--model is required"));
  auto files = OpenModelFiles(dir);
  if (!files.ok()) return ReportFailure(files.status());
  EngineOptions options;
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.op_timing = absl::GetFlag(FLAGS_op_stats);
  ApplyEngineFlags(&options);
  auto device = kernels::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return ReportFailure(device.status());
  options.device = *device;
  // One rank of a larger group, emulated (worker/emulated_communicator.h).
  const int world = absl::GetFlag(FLAGS_emulate_world_size),
            rank = absl::GetFlag(FLAGS_emulate_rank);
  if (world < 1 || rank < 0 || rank >= world) {
    return ReportFailure(absl::InvalidArgumentError(absl::StrCat(
        "--emulate_rank (", rank, ") must lie in [0, --emulate_world_size (", world, "))")));
  }
  options.rank = rank;
  options.world_size = world;
  options.sp_degree = absl::GetFlag(FLAGS_emulate_sp_degree);
  kernels::BackendOptions backend_options;
  backend_options.threads = options.threads;
  backend_options.fp8_gemm = options.fp8_gemm;
  auto backend = kernels::CreateBackend(options.device, backend_options);
  if (!backend.ok()) return ReportFailure(backend.status());
  std::unique_ptr<EmulatedCommunicator> emulated;
  if (world > 1) emulated = std::make_unique<EmulatedCommunicator>(rank, world, backend->get());
  auto created = Engine::Create(*files, options, emulated.get(), *std::move(backend));
  if (!created.ok()) return ReportFailure(created.status());
  Engine& engine = **created;
  const Tokenizer& tokenizer = *files->tokenizer;

  auto loaded = LoadRequests(tokenizer, engine.config());
  if (!loaded.ok()) return ReportFailure(loaded.status());
  std::vector<Planned> planned = *std::move(loaded);
  std::stable_sort(planned.begin(), planned.end(), [](const Planned& a, const Planned& b) {
    return a.arrive_before_step < b.arrive_before_step;
  });

  SchedulerConfig sc;
  sc.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  sc.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  sc.max_model_len = engine.config().max_position_embeddings;
  sc.num_blocks = engine.num_blocks();
  sc.block_size = engine.block_size();
  sc.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  if (sc.max_num_batched_tokens < 1 || sc.max_num_seqs < 1) {
    return ReportFailure(absl::InvalidArgumentError(
        "--max_num_batched_tokens and --max_num_seqs must be at least 1"));
  }
  auto policy =
      MakeShiftPolicy(absl::GetFlag(FLAGS_shift_policy), absl::GetFlag(FLAGS_shift_threshold));
  if (!policy.ok()) return ReportFailure(policy.status());
  std::unique_ptr<StepTrace> trace;
  if (const std::string path = absl::GetFlag(FLAGS_step_trace); !path.empty()) {
    auto opened = StepTrace::Open(path);
    if (!opened.ok()) return ReportFailure(opened.status());
    trace = *std::move(opened);
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> profile(nullptr, &std::fclose);
  if (const std::string path = absl::GetFlag(FLAGS_compute_profile); !path.empty()) {
    profile.reset(std::fopen(path.c_str(), "a"));
    if (profile == nullptr) {
      return ReportFailure(absl::UnavailableError(absl::StrCat("cannot open ", path)));
    }
  }
  double last_collective_s = 0;
  uint64_t last_bytes = 0, last_gemm_flops = 0;
  RealClock clock;
  Scheduler scheduler(sc, &clock);
  LocalExecutor executor(&engine);
  StepLoop loop(&scheduler, policy->get(), &executor, &clock, trace.get());
  loop.set_plan_ahead(absl::GetFlag(FLAGS_async_scheduling));
  absl::StatusOr<LatencyTargetFlagValues> targets = LatencyTargetFlags();
  if (!targets.ok()) return ReportFailure(targets.status());
  loop.set_tpot_target(targets->tpot_ms / 1e3);
  loop.set_ttft_target(targets->ttft_ms / 1e3);

  // Request ids count from 1 in arrival order, as the router gives them.
  const uint64_t first_id = 1;
  const std::vector<int32_t> first_prompt = planned.front().request->prompt;
  const bool dump = !absl::GetFlag(FLAGS_dump_logits).empty();
  std::vector<std::pair<int32_t, std::vector<float>>> dumped;
  if (dump) {
    executor.ReturnLogits({first_id}, [&](const EngineSample& t) {
      dumped.push_back({t.token_id, t.logits});
    });
  }
  const bool jsonl = !absl::GetFlag(FLAGS_requests).empty();
  const bool print_ids = absl::GetFlag(FLAGS_print_ids);
  if (!jsonl && !print_ids && absl::GetFlag(FLAGS_prompt_tokens) == 0 &&
      absl::GetFlag(FLAGS_prompt_ids).empty()) {
    std::printf("%s", absl::GetFlag(FLAGS_prompt).c_str());
  }
  IncrementalDetokenizer detokenizer(tokenizer, /*skip_special=*/true);

  struct Result {
    std::vector<int32_t> tokens;
    FinishReason finish = FinishReason::kNone;
  };
  std::map<uint64_t, Result> results;
  const size_t num_requests = planned.size();
  size_t next = 0;
  uint64_t next_id = first_id;
  int64_t prompt_tokens = 0, steps = 0, decode_steps = 0, decode_tokens = 0;
  int64_t skipped_to = 0;  // the step idling skipped ahead to
  size_t started = 0;      // requests with a first token
  const auto start = std::chrono::steady_clock::now();
  double prefill_seconds = 0;
  std::chrono::steady_clock::time_point decode_start;
  for (;;) {
    // Queue what arrives before the step planned next (planning ahead,
    // the one after the step in flight); with nothing to do, skip ahead to
    // the next arrivals, all those due before the same step (the router
    // would have idled until them).
    const int64_t next_step = steps + 1 + (loop.busy() ? 1 : 0);
    for (; next < planned.size();) {
      if (!scheduler.HasWork()) skipped_to = std::max(skipped_to, planned[next].arrive_before_step);
      if (planned[next].arrive_before_step > std::max(next_step, skipped_to)) break;
      // It came once the step before had ended: that one ends first (and
      // plans nothing ahead of it, as the router found nothing to).
      if (planned[next].after_step_ended && loop.busy()) break;
      std::unique_ptr<Request> r = std::move(planned[next++].request);
      r->id = next_id++;
      r->arrival = clock.Now();
      prompt_tokens += static_cast<int64_t>(r->prompt.size());
      results[r->id];
      if (absl::Status added = scheduler.AddRequest(std::move(r)); !added.ok()) {
        return ReportFailure(added);
      }
    }
    if (!scheduler.HasWork() && !loop.busy()) break;
    absl::StatusOr<std::optional<StepRecord>> ran = loop.RunStep();
    if (!ran.ok()) return ReportFailure(ran.status());
    if (!ran->has_value()) {
      if (next < planned.size()) continue;
      return ReportFailure(absl::InternalError("no step can run, yet requests are waiting"));
    }
    ++steps;
    if (profile != nullptr) {
      const StepRecord& record = **ran;
      const StepShape& shape = record.decision.inputs;
      const double collective_s = emulated ? emulated->seconds() - last_collective_s : 0.0;
      const uint64_t collective_bytes = emulated ? emulated->bytes_received() - last_bytes : 0;
      if (emulated) {
        last_collective_s = emulated->seconds();
        last_bytes = emulated->bytes_received();
      }
      const uint64_t gemm_flops = engine.backend().stats(kernels::Op::kGemm).flops;
      ComputeProfileLine line;
      line.world_size = world;
      line.rank = rank;
      line.mode = record.decision.mode;
      line.shape = shape;
      line.step_s = record.seconds();
      line.collective_s = collective_s;
      line.collective_bytes = collective_bytes;
      line.gemm_flops = gemm_flops - last_gemm_flops;
      std::fputs(FormatComputeProfileLine(line).c_str(), profile.get());
      last_gemm_flops = gemm_flops;
    }
    const bool decoding = started == num_requests;
    for (const RequestUpdate& update : (*ran)->updates) {
      Result& result = results[update.seq_id];
      if (result.tokens.empty() && !update.new_tokens.empty()) ++started;
      for (int32_t token : update.new_tokens) {
        result.tokens.push_back(token);
        if (update.seq_id != first_id || jsonl) continue;
        if (print_ids) {
          std::printf("%s%d", result.tokens.size() > 1 ? " " : "", token);
        } else if (auto delta = detokenizer.Append(token); delta.ok()) {
          std::printf("%s", delta->c_str());
        }
        std::fflush(stdout);
      }
      if (update.finish != FinishReason::kNone) result.finish = update.finish;
      if (decoding) decode_tokens += static_cast<int64_t>(update.new_tokens.size());
    }
    if (decoding) {
      ++decode_steps;
    } else if (started == num_requests) {
      prefill_seconds = Seconds(start);
      decode_start = std::chrono::steady_clock::now();
    }
  }
  const double decode_seconds = decode_steps > 0 ? Seconds(decode_start) : 0.0;
  if (dump) {
    absl::Status written = WriteLogits(absl::GetFlag(FLAGS_dump_logits), first_prompt, dumped);
    if (!written.ok()) return ReportFailure(written);
  }
  if (jsonl) {
    for (const auto& [id, result] : results) {
      nlohmann::json line = {{"id", id},
                             {"token_ids", result.tokens},
                             {"finish_reason", FinishReasonName(result.finish)}};
      std::printf("%s\n", line.dump().c_str());
    }
  } else {
    std::printf("%s\n", print_ids ? "" : detokenizer.Finish().c_str());
  }
  std::fflush(stdout);  // the text, then the figures on stderr
  if (absl::GetFlag(FLAGS_op_stats)) {
    engine.mutable_backend()->FlushOpTimes();
    std::fputs(kernels::OpStatsTable(engine.backend()).c_str(), stderr);
  }
  std::fprintf(stderr,
               "prefill: %lld prompt tokens of %zu requests in %.3f s (%.1f tokens/s)\n"
               "decode: %lld steps, %lld tokens in %.3f s (%.1f tokens/s, %.1f ms/step)\n"
               "%lld steps, %lld preemptions, %lld KV blocks of %lld tokens\n",
               static_cast<long long>(prompt_tokens), num_requests, prefill_seconds,
               static_cast<double>(prompt_tokens) / std::max(prefill_seconds, 1e-9),
               static_cast<long long>(decode_steps), static_cast<long long>(decode_tokens),
               decode_seconds, decode_tokens / std::max(decode_seconds, 1e-9),
               1e3 * decode_seconds / std::max<int64_t>(decode_steps, 1),
               static_cast<long long>(steps), static_cast<long long>(scheduler.num_preemptions()),
               static_cast<long long>(sc.num_blocks), static_cast<long long>(sc.block_size));
  return 0;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(argc, argv,
                     "Generates text offline from a model directory on one CPU rank, streaming it, "
                     "through the same step loop as the router.",
                     "shift-generate --model=DIR [--prompt=TEXT] [--max_tokens=N] [flags]");
  return shift::Main();
}
