// shift-bench: drives a running shift router with a workload (open-loop
// Poisson arrivals, closed-loop concurrency, bursts, or a replayed trace)
// and reports TTFT, TPOT, inter-token latency, end-to-end latency,
// throughput and goodput, as a table and as JSON. Prompts are token ids of
// exact lengths and generation ignores EOS, so every length is as asked.
// It speaks shift's gRPC API or, with --api=openai, the OpenAI HTTP API of
// shift's --http_port or of any compatible server (tools/openai_client.h).
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/cli.h"
#include "common/defaults.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "shift/v1/generation.grpc.pb.h"
#include "tools/client_flags.h"
#include "tools/openai_client.h"
#include "workload/plots.h"
#include "workload/workload.h"
#include "workload/workload_flags.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "Server address (host:port): the router's gRPC port, or with --api=openai an HTTP port "
          "(plain HTTP; https is not supported)");
ABSL_FLAG(std::string, api, "grpc",
          "grpc (shift's Generate) or openai (streamed /v1/completions or /v1/chat/completions "
          "of shift's --http_port or any OpenAI-compatible server; TTFT at the first chunk with "
          "text, inter-token latency per chunk, token counts from the usage chunk)");
ABSL_FLAG(std::string, endpoint, "completions",
          "--api=openai: completions (the prompt as token ids) or chat (one user message of "
          "one common English word per prompt token, about as many tokens; the report counts "
          "the server's prompt tokens, chat template included)");
ABSL_FLAG(std::string, served_model, "",
          "--api=openai: the model to ask for (default: the first of GET /v1/models)");
ABSL_FLAG(int32_t, vocab_size, 1000,
          "--api=openai: prompt token ids are drawn below this (GET /v1/models does not tell the "
          "vocabulary); ids from 10 up are ordinary tokens of any model with this many");
ABSL_FLAG(std::string, json_out, "", "Also write the report (and every request) as JSON here");
ABSL_FLAG(bool, progress, true, "Show progress on stderr when it is a terminal");
ABSL_FLAG(std::string, plot_dir, "",
          "Write plot data and PNGs (gnuplot) here: latency CDFs, throughput, TTFT and mode over "
          "time");
ABSL_FLAG(std::string, compare, "",
          "Run the workload once per configuration on clusters shift-bench starts itself on "
          "127.0.0.1 (needs --model): tp, sp, shift, threshold, cost (one group of --world_size "
          "ranks with that policy; shift is --shift_policy) and dp (--world_size groups of one "
          "rank); writes one table, compare.json and plots side by side in --plot_dir, and each "
          "router's --step_trace as CONFIG/steps.jsonl there");
ABSL_FLAG(std::string, model, "", "--compare: the model directory the clusters serve");
ABSL_FLAG(int32_t, world_size, 2, "--compare: ranks (P) per configuration");
ABSL_FLAG(int32_t, sp_degree, 0,
          "--compare: the groups' --sp_degree (the hybrid layout: the sp mode runs this many "
          "Ulysses groups over TP shards; 0: --world_size, pure SP)");
ABSL_FLAG(std::string, shift_policy, "threshold", "--compare: the policy of `shift`");
ABSL_FLAG(int64_t, shift_threshold, shift::defaults::kShiftThreshold,
          "--compare: --shift_threshold of the routers");
ABSL_FLAG(int32_t, worker_threads, 1, "--compare: compute threads per rank");
ABSL_FLAG(std::string, worker_device, "cpu",
          "--compare: the ranks' --device (cuda: every rank on this machine's GPUs, rank r on GPU "
          "r modulo their number, so ranks share a GPU when there are fewer)");
ABSL_FLAG(int64_t, kv_cache_bytes, shift::defaults::kKvCacheBytes,
          "--compare: KV cache bytes per rank");
ABSL_FLAG(std::string, metrics_address, "",
          "The router's /metrics host:port, scraped during the run for the mode-over-time plot "
          "and the router's overhead per step");

namespace shift {
namespace {

namespace wl = workload;
using Clock = std::chrono::steady_clock;

// The body of GET http://`address``path` (empty on any failure).
std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return "";
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints,
                  &found) != 0) {
    return "";
  }
  std::string response;
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// Sums every series of the metric `name` (with label mode="`mode`" unless
// `mode` is empty).
double SumByMode(const std::string& text, const std::string& name, const std::string& mode = "") {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!(absl::StartsWith(line, name + "{") || absl::StartsWith(line, name + " ")) ||
        (!mode.empty() && !absl::StrContains(line, absl::StrCat("mode=\"", mode, "\"")))) {
      continue;
    }
    double v;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
  }
  return sum;
}

// The router's own cost per step over a run, from two scrapes of its
// /metrics: the mean wait of a busy group for its next plan
// (shift_router_step_overhead_seconds) and the mean step
// (shift_step_duration_seconds).
struct RouterOverhead {
  double overhead_sum = 0, overhead_count = 0, step_sum = 0, step_count = 0;

  static RouterOverhead Scrape(const std::string& text) {
    return {SumByMode(text, "shift_router_step_overhead_seconds_sum"),
            SumByMode(text, "shift_router_step_overhead_seconds_count"),
            SumByMode(text, "shift_step_duration_seconds_sum"),
            SumByMode(text, "shift_step_duration_seconds_count")};
  }
  RouterOverhead Since(const RouterOverhead& start) const {
    return {overhead_sum - start.overhead_sum, overhead_count - start.overhead_count,
            step_sum - start.step_sum, step_count - start.step_count};
  }
  double mean_overhead_s() const { return overhead_count > 0 ? overhead_sum / overhead_count : 0; }
  double mean_step_s() const { return step_count > 0 ? step_sum / step_count : 0; }
  // The overhead as a fraction of a step.
  double share() const { return mean_step_s() > 0 ? mean_overhead_s() / mean_step_s() : 0; }
  nlohmann::json Json() const {
    return {{"steps", step_count},
            {"mean_step_s", mean_step_s()},
            {"mean_router_step_overhead_s", mean_overhead_s()},
            {"router_overhead_share_of_step", share()}};
  }
};

// One Generate call, timing every token. Reports to `done` when over.
class Call final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Call(v1::Generation::Stub* stub, const ClientSecurity& security, const wl::Request& request,
       Clock::time_point zero, std::function<void(wl::Outcome)> done)
      : zero_(zero), done_(std::move(done)) {
    AddApiKey(&ctx_, security.api_key);
    request_.mutable_token_ids()->mutable_ids()->Add(request.prompt.begin(), request.prompt.end());
    request_.mutable_sampling()->set_max_tokens(request.max_tokens);
    request_.mutable_sampling()->set_ignore_eos(true);
    outcome_.prompt_tokens = static_cast<int64_t>(request.prompt.size());
    start_ = Clock::now();
    outcome_.start = Seconds(start_);
    stub->async()->Generate(&ctx_, &request_, this);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    const double now = Seconds(Clock::now());
    if (response_.has_delta()) {
      for (int i = 0; i < response_.delta().token_ids_size(); ++i) {
        if (outcome_.ttft < 0) outcome_.ttft = now - outcome_.start;
        outcome_.token_times.push_back(now);
      }
    } else if (response_.has_final()) {
      outcome_.output_tokens = response_.final().usage().completion_tokens();
      outcome_.cached_tokens = response_.final().usage().cached_prompt_tokens();
    }
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    outcome_.e2e = Seconds(Clock::now()) - outcome_.start;
    if (!status.ok()) {
      static const char* kNames[] = {"OK",
                                     "CANCELLED",
                                     "UNKNOWN",
                                     "INVALID_ARGUMENT",
                                     "DEADLINE_EXCEEDED",
                                     "NOT_FOUND",
                                     "ALREADY_EXISTS",
                                     "PERMISSION_DENIED",
                                     "RESOURCE_EXHAUSTED",
                                     "FAILED_PRECONDITION",
                                     "ABORTED",
                                     "OUT_OF_RANGE",
                                     "UNIMPLEMENTED",
                                     "INTERNAL",
                                     "UNAVAILABLE",
                                     "DATA_LOSS",
                                     "UNAUTHENTICATED"};
      const int code = static_cast<int>(status.error_code());
      outcome_.code = code >= 0 && code <= 16 ? kNames[code] : absl::StrCat("CODE_", code);
    }
    // Deleted before reporting: the last report lets the caller destroy the
    // channel, which this call's context must not outlive.
    auto done = std::move(done_);
    wl::Outcome outcome = std::move(outcome_);
    delete this;
    done(std::move(outcome));
  }

 private:
  double Seconds(Clock::time_point t) const {
    return std::chrono::duration<double>(t - zero_).count();
  }

  Clock::time_point zero_, start_;
  std::function<void(wl::Outcome)> done_;
  grpc::ClientContext ctx_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  wl::Outcome outcome_;
};

absl::StatusOr<v1::ModelInfo> FetchModel(const std::string& address,
                                         const ClientSecurity& security) {
  auto stub = v1::Generation::NewStub(Connect(address, security));
  v1::ModelInfo model;
  grpc::ClientContext ctx;
  AddApiKey(&ctx, security.api_key);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &model);
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach the router at ", address, ": ", s.error_message()));
  }
  return model;
}

struct RunResult {
  std::vector<wl::Outcome> outcomes;
  std::vector<wl::ModeSample> modes;
  std::optional<RouterOverhead> overhead;  // with the router's /metrics
};

// Starts one request, times relative to the run's zero; `done` gets its
// outcome (on any thread).
using Send = std::function<void(const wl::Request& request, Clock::time_point zero,
                                std::function<void(wl::Outcome)> done)>;

// Sends over gRPC to the router at `address`.
class GrpcSender {
 public:
  GrpcSender(const std::string& address, const ClientSecurity& security)
      : security_(security), stub_(v1::Generation::NewStub(Connect(address, security))) {}
  Send sender() {
    return [this](const wl::Request& r, Clock::time_point zero,
                  std::function<void(wl::Outcome)> done) {
      new Call(stub_.get(), security_, r, zero, std::move(done));
    };
  }

 private:
  const ClientSecurity security_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

// Offers `requests` through `send` and waits for every answer; closed-loop
// prompts are ids below `vocab_size`.
RunResult Drive(const Send& send, const std::string& metrics, std::vector<wl::Request> requests,
                int32_t vocab_size) {
  const int32_t concurrency = wl::ClosedLoopConcurrency();
  const bool closed = concurrency > 0;
  const bool progress = absl::GetFlag(FLAGS_progress) && isatty(STDERR_FILENO);
  RunResult result;
  absl::Mutex mu;
  int64_t in_flight = 0;
  const Clock::time_point zero = Clock::now();
  auto done = [&](wl::Outcome o) {
    absl::MutexLock lock(&mu);
    result.outcomes.push_back(std::move(o));
    --in_flight;
  };
  const double duration = wl::WorkloadDuration();
  const int64_t limit = closed ? concurrency : INT64_MAX;
  // The router's step counters, sampled for the mode-over-time plot.
  absl::Notification sampling;
  std::thread sampler;
  auto sample = [&] {
    const std::string text = HttpGet(metrics, "/metrics");
    if (text.empty()) return;
    result.modes.push_back({std::chrono::duration<double>(Clock::now() - zero).count(),
                            SumByMode(text, "shift_steps_total", "tp"),
                            SumByMode(text, "shift_steps_total", "sp")});
  };
  RouterOverhead overhead_start;
  if (!metrics.empty()) {
    overhead_start = RouterOverhead::Scrape(HttpGet(metrics, "/metrics"));
    sampler = std::thread([&] {
      do {
        sample();
      } while (!sampling.WaitForNotificationWithTimeout(absl::Milliseconds(500)));
    });
  }
  size_t sent = 0;
  for (wl::Request& r : requests) {
    if (r.prompt.empty()) r.prompt = wl::ClosedLoopPrompt(vocab_size, sent);
    if (closed) {
      absl::MutexLock lock(&mu);
      auto room = [&]() { return in_flight < limit; };
      mu.Await(absl::Condition(&room));
      if (std::chrono::duration<double>(Clock::now() - zero).count() >= duration) break;
    } else {
      std::this_thread::sleep_until(
          zero + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(r.at)));
    }
    {
      absl::MutexLock lock(&mu);
      ++in_flight;
      if (progress) {
        std::fprintf(stderr, "\r%zu sent, %zu done, %lld in flight   ", sent + 1,
                     result.outcomes.size(), static_cast<long long>(in_flight));
      }
    }
    send(r, zero, done);
    ++sent;
  }
  {
    absl::MutexLock lock(&mu);
    auto all = [&]() { return in_flight == 0; };
    mu.Await(absl::Condition(&all));
  }
  sampling.Notify();
  if (sampler.joinable()) {
    sampler.join();
    sample();  // the run's end
    const std::string text = HttpGet(metrics, "/metrics");
    if (!text.empty()) result.overhead = RouterOverhead::Scrape(text).Since(overhead_start);
  }
  if (progress) std::fprintf(stderr, "\n");
  return result;
}

// A router and its workers started by shift-bench for one --compare
// configuration, on 127.0.0.1; stopped (and, if need be, killed) on exit.
class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const std::string& config,
                                                             const std::string& dir) {
    const std::string model = absl::GetFlag(FLAGS_model);
    if (model.empty()) return absl::InvalidArgumentError("--compare needs --model=DIR");
    const int p = absl::GetFlag(FLAGS_world_size);
    std::string policy, bin = BinDir();
    int groups = 1, world = p;
    // dp groups are one rank each.
    int sp_degree = absl::GetFlag(FLAGS_sp_degree);
    if (config == "tp" || config == "sp" || config == "threshold" || config == "cost") {
      policy = config;
    } else if (config == "shift") {
      policy = absl::GetFlag(FLAGS_shift_policy);
    } else if (config == "dp") {
      policy = "tp";  // one rank per group: the mode does not matter
      groups = p;
      world = 1;
      sp_degree = 0;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown --compare configuration \"", config,
                       "\": use tp, sp, shift, threshold, cost or dp"));
    }
    std::unique_ptr<LocalCluster> c(new LocalCluster());
    std::filesystem::create_directories(dir);
    const std::string ports = dir + "/ports";
    std::filesystem::remove(ports);
    std::filesystem::remove(dir + "/steps.jsonl");
    SHIFT_RETURN_IF_ERROR(
        c->Spawn({bin + "/router/shift-router", "--model=" + model, "--host=127.0.0.1", "--port=0",
                  "--internal_port=0", "--metrics_port=0", "--ports_file=" + ports,
                  absl::StrCat("--world_size=", world), absl::StrCat("--groups=", groups),
                  absl::StrCat("--sp_degree=", sp_degree), "--shift_policy=" + policy,
                  "--step_trace=" + dir + "/steps.jsonl",
                  absl::StrCat("--shift_threshold=", absl::GetFlag(FLAGS_shift_threshold))},
                 dir + "/router.log"));
    std::string text;
    for (int i = 0; i < 300 && (text.empty() || text.back() != '\n'); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::ifstream in(ports);
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    int grpc_port = 0, metrics_port = 0, internal_port = 0;
    if (std::sscanf(text.c_str(), "grpc=%d metrics=%d internal=%d", &grpc_port, &metrics_port,
                    &internal_port) != 3) {
      return absl::UnavailableError(
          absl::StrCat("the router did not start; see ", dir, "/router.log"));
    }
    c->address = absl::StrCat("127.0.0.1:", grpc_port);
    c->metrics = absl::StrCat("127.0.0.1:", metrics_port);
    for (int g = 0; g < groups; ++g) {
      for (int r = 0; r < world; ++r) {
        SHIFT_RETURN_IF_ERROR(c->Spawn(
            {bin + "/worker/shift-worker", absl::StrCat("--router=127.0.0.1:", internal_port),
             absl::StrCat("--group=", g), absl::StrCat("--rank=", r),
             absl::StrCat("--world_size=", world), absl::StrCat("--sp_degree=", sp_degree),
             "--model=" + model, absl::StrCat("--threads=", absl::GetFlag(FLAGS_worker_threads)),
             "--device=" + absl::GetFlag(FLAGS_worker_device),
             absl::StrCat("--kv_cache_bytes=", absl::GetFlag(FLAGS_kv_cache_bytes))},
            absl::StrCat(dir, "/worker-g", g, "-r", r, ".log")));
      }
    }
    // Ready when every group has formed.
    auto stub = v1::Generation::NewStub(
        grpc::CreateChannel(c->address, grpc::InsecureChannelCredentials()));
    for (int i = 0; i < 1200; ++i) {
      v1::ServerStatus status;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      if (stub->GetStatus(&ctx, v1::GetStatusRequest(), &status).ok()) {
        bool ready = status.groups_size() == groups;
        for (const auto& group : status.groups()) ready = ready && group.ready();
        if (ready) return c;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::DeadlineExceededError(
        absl::StrCat("the ", config, " cluster did not form within 120 s; see ", dir));
  }

  ~LocalCluster() {
    // SIGTERM to the router (it drains), then to its workers (they would
    // wait for the next router). Each process has 15 s to exit; the
    // Subprocess destructors then kill (SIGKILL) and reap any still running.
    if (!processes_.empty()) {
      processes_.front().Signal(SIGTERM).IgnoreError();
      processes_.front().Wait(absl::Seconds(15)).IgnoreError();
    }
    for (size_t i = 1; i < processes_.size(); ++i) processes_[i].Signal(SIGTERM).IgnoreError();
    for (Subprocess& process : processes_) process.Wait(absl::Seconds(15)).IgnoreError();
  }

  std::string address, metrics;

 private:
  LocalCluster() = default;
  // The directory holding router/ and worker/: shift-bench lives in tools/.
  static std::string BinDir() {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return self.parent_path().parent_path().string();
  }
  absl::Status Spawn(const std::vector<std::string>& argv, const std::string& log) {
    SHIFT_ASSIGN_OR_RETURN(Subprocess process, Subprocess::Start(argv, log));
    processes_.push_back(std::move(process));
    return absl::OkStatus();
  }

  std::vector<Subprocess> processes_;  // the router first
};

absl::Status Compare() {
  const std::vector<std::string> configs = absl::StrSplit(absl::GetFlag(FLAGS_compare), ',');
  const std::string dir =
      absl::GetFlag(FLAGS_plot_dir).empty() ? "shift-bench-compare" : absl::GetFlag(FLAGS_plot_dir);
  std::vector<wl::Request> requests;
  v1::ModelInfo model;
  nlohmann::json all = nlohmann::json::object();
  std::string table = absl::StrFormat(
      "| config | completed | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | E2E p50 | E2E p99 | "
      "tokens/s | goodput | mean step | router overhead / step |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  // The clusters are this machine's own, on 127.0.0.1, without TLS or keys.
  const ClientSecurity plaintext{grpc::InsecureChannelCredentials(), "", false};
  for (const std::string& config : configs) {
    std::fprintf(stderr, "shift-bench: %s ...\n", config.c_str());
    SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<LocalCluster> cluster,
                           LocalCluster::Start(config, dir + "/" + config));
    if (requests.empty()) {
      SHIFT_ASSIGN_OR_RETURN(model, FetchModel(cluster->address, plaintext));
      SHIFT_ASSIGN_OR_RETURN(requests,
                             wl::BuildWorkloadFromFlags(model.vocab_size(), model.max_model_len()));
    }
    GrpcSender grpc_sender(cluster->address, plaintext);
    const RunResult run =
        Drive(grpc_sender.sender(), cluster->metrics, requests, model.vocab_size());
    const wl::Report r = wl::MakeReportFromFlags(run.outcomes);
    absl::StrAppendFormat(
        &table,
        "| %s | %d/%d | %.1f ms | %.1f ms | %.2f ms | %.2f ms | %.0f ms | %.0f ms "
        "| %.1f | %.2f/s | %s | %s |\n",
        config, r.completed, r.requests, 1000 * r.ttft.p50, 1000 * r.ttft.p99, 1000 * r.tpot.p50,
        1000 * r.tpot.p99, 1000 * r.e2e.p50, 1000 * r.e2e.p99, r.token_throughput, r.goodput,
        run.overhead ? absl::StrFormat("%.2f ms", 1000 * run.overhead->mean_step_s()) : "-",
        run.overhead ? absl::StrFormat("%.1f us (%.2f%%)", 1e6 * run.overhead->mean_overhead_s(),
                                       100 * run.overhead->share())
                     : "-");
    const absl::Status plotted =
        wl::WritePlots(dir + "/" + config, "shift-bench " + config, run.outcomes, run.modes);
    if (!plotted.ok()) std::fprintf(stderr, "shift-bench: %s\n", plotted.ToString().c_str());
    all[config] = wl::ReportJson(r);
    if (run.overhead) all[config]["router"] = run.overhead->Json();
  }
  std::printf("%s", table.c_str());
  {
    // The configurations' latency CDFs side by side.
    std::ofstream gp(dir + "/compare.gp");
    gp << "set terminal pngcairo size 900,500\nset grid\nset key bottom right\nset logscale x\n"
       << "set xlabel 'ms'\nset ylabel 'fraction of requests'\n";
    for (const char* what : {"ttft", "e2e"}) {
      gp << "set output '" << what << "_compare.png'\nset title '" << what
         << " by configuration'\nplot ";
      for (size_t i = 0; i < configs.size(); ++i) {
        gp << (i ? ", " : "") << "'" << configs[i] << "/" << what << "_cdf.dat' using 1:2 "
           << "with lines lw 2 title '" << configs[i] << "'";
      }
      gp << "\n";
    }
  }
  if (const absl::Status plotted = wl::RunGnuplot(dir, "compare.gp"); !plotted.ok()) {
    std::fprintf(stderr, "shift-bench: %s\n", plotted.ToString().c_str());
  }
  { std::ofstream(dir + "/compare.md") << table; }
  const std::string path =
      absl::GetFlag(FLAGS_json_out).empty() ? dir + "/compare.json" : absl::GetFlag(FLAGS_json_out);
  std::ofstream(path) << nlohmann::json{{"workload", wl::WorkloadName()},
                                        {"world_size", absl::GetFlag(FLAGS_world_size)},
                                        {"sp_degree", absl::GetFlag(FLAGS_sp_degree)},
                                        {"configs", all}}
                             .dump(1)
                      << "\n";
  return absl::OkStatus();
}

// The workload over OpenAI's HTTP API at `address`.
absl::StatusOr<RunResult> RunOpenAi(const std::string& address, const ClientSecurity& security) {
  bench::Endpoint endpoint;
  if (absl::GetFlag(FLAGS_endpoint) == "completions") {
    endpoint = bench::Endpoint::kCompletions;
  } else if (absl::GetFlag(FLAGS_endpoint) == "chat") {
    endpoint = bench::Endpoint::kChat;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown --endpoint \"", absl::GetFlag(FLAGS_endpoint), "\": use completions or chat"));
  }
  if (security.tls) {
    return absl::InvalidArgumentError(
        "--api=openai speaks plain HTTP: --tls_ca and --tls_cert are not supported with it");
  }
  const int32_t vocab_size = absl::GetFlag(FLAGS_vocab_size);
  if (vocab_size < 11) return absl::InvalidArgumentError("--vocab_size must be at least 11");
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<bench::OpenAiClient> client,
                         bench::OpenAiClient::Create(address, security.api_key, endpoint));
  SHIFT_ASSIGN_OR_RETURN(const std::vector<bench::ServedModel> models, client->ListModels());
  std::string model = absl::GetFlag(FLAGS_served_model);
  if (model.empty()) model = models.front().id;
  // A server that does not say its context length gets prompts uncapped.
  int64_t max_model_len = int64_t{1} << 30;
  for (const bench::ServedModel& m : models) {
    if (m.id == model && m.max_model_len > 0) max_model_len = m.max_model_len;
  }
  client->set_model(model);
  SHIFT_ASSIGN_OR_RETURN(std::vector<wl::Request> requests,
                         wl::BuildWorkloadFromFlags(vocab_size, max_model_len));
  bench::OpenAiClient* sender = client.get();
  RunResult run = Drive(
      [sender](const wl::Request& r, Clock::time_point zero,
               std::function<void(wl::Outcome)> done) { sender->Send(r, zero, std::move(done)); },
      absl::GetFlag(FLAGS_metrics_address), std::move(requests), vocab_size);
  for (const auto& [code, message] : client->FailureMessages()) {
    std::fprintf(stderr, "shift-bench: %s, first of them: %s\n", code.c_str(), message.c_str());
  }
  return run;
}

absl::Status Run() {
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "grpc" && api != "openai") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --api \"", api, "\": use grpc or openai"));
  }
  if (!absl::GetFlag(FLAGS_compare).empty()) {
    if (api != "grpc") {
      return absl::InvalidArgumentError(
          "--compare drives the clusters it starts over gRPC: drop --api=openai");
    }
    return Compare();
  }
  const std::string address = absl::GetFlag(FLAGS_address);
  SHIFT_ASSIGN_OR_RETURN(const ClientSecurity security, ClientSecurityFromFlags());
  RunResult run;
  if (api == "openai") {
    SHIFT_ASSIGN_OR_RETURN(run, RunOpenAi(address, security));
  } else {
    SHIFT_ASSIGN_OR_RETURN(v1::ModelInfo model, FetchModel(address, security));
    SHIFT_ASSIGN_OR_RETURN(std::vector<wl::Request> requests,
                           wl::BuildWorkloadFromFlags(model.vocab_size(), model.max_model_len()));
    GrpcSender grpc_sender(address, security);
    run = Drive(grpc_sender.sender(), absl::GetFlag(FLAGS_metrics_address), std::move(requests),
                model.vocab_size());
  }
  const wl::Report report = wl::MakeReportFromFlags(run.outcomes);
  std::printf("%s", wl::ReportTable(report).c_str());
  if (run.overhead) {
    std::printf("router: %.0f steps, mean step %.3f ms, overhead %.1f us a step (%.2f%% of it)\n",
                run.overhead->step_count, 1000 * run.overhead->mean_step_s(),
                1e6 * run.overhead->mean_overhead_s(), 100 * run.overhead->share());
  }
  if (const std::string dir = absl::GetFlag(FLAGS_plot_dir); !dir.empty()) {
    const absl::Status plotted = wl::WritePlots(
        dir, absl::StrCat("shift-bench ", wl::WorkloadName()), run.outcomes, run.modes);
    if (!plotted.ok()) std::fprintf(stderr, "shift-bench: %s\n", plotted.ToString().c_str());
  }
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    nlohmann::json j = wl::ReportJson(report);
    j["workload"] = wl::WorkloadName();
    j["api"] = api == "openai" ? "openai/" + absl::GetFlag(FLAGS_endpoint) : api;
    j["outcomes"] = wl::OutcomesJson(run.outcomes);
    if (run.overhead) j["router"] = run.overhead->Json();
    std::ofstream(path) << j.dump(1) << "\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  shift::InitProgram(argc, argv,
                     "Drives a shift router (gRPC) or an OpenAI-compatible HTTP server with a "
                     "workload and reports latency and throughput.",
                     "shift-bench --address=HOST:PORT [--api=grpc|openai] "
                     "--workload=poisson|closed|burst|trace [flags]");
  const absl::Status status = shift::Run();
  if (!status.ok()) return shift::ReportFailure(status);
  return 0;
}
