// shift-router: the server. Serves shift.v1.Generation (plus health and
// reflection) on the public port, the workers' control streams and the
// rendezvous store on the internal port (127.0.0.1 unless told otherwise;
// mutual TLS with --tls_ca), health alone on an optional plaintext port for
// orchestrator probes, and Prometheus /metrics; schedules every step of its
// worker groups and decides TP or SP for each.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cli.h"
#include "common/defaults.h"
#include "common/file_util.h"
#include "common/fingerprint.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "common/model_config.h"
#include "common/security.h"
#include "common/status.h"
#include "common/tokenizer.h"
#include "core/target_flags.h"
#include "router/admission_pool.h"
#include "router/generation_service.h"
#include "router/http_server.h"
#include "router/openai_service.h"
#include "router/public_reflection.h"
#include "router/rendezvous_service.h"
#include "router/router.h"
#include "router/router_metrics.h"
#include "router/worker_hub.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address of the public port, the health port and /metrics");
ABSL_FLAG(int32_t, port, 50051,
          "Public gRPC port: Generation, health, reflection of the public services (0: any)");
ABSL_FLAG(std::string, internal_host, "127.0.0.1",
          "Address of the internal port; keep it on a private network");
ABSL_FLAG(int32_t, internal_port, 50052,
          "Internal gRPC port: the ranks' control streams and rendezvous store (0: any)");
ABSL_FLAG(int32_t, health_port, -1,
          "Plaintext port serving only grpc.health.v1, for orchestrator probes that cannot "
          "speak TLS (-1: none, 0: any)");
ABSL_FLAG(std::string, internal_token_file, "",
          "The internal port's token: every rank's call must carry it (the ranks' "
          "--internal_token_file). Read from this file, or written there (mode 0600) when it does "
          "not exist; empty: $HOME/.shift/internal_token; none: no token, allowed only with "
          "mutual TLS (--tls_ca)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the public and internal ports (TLS; re-read when it "
          "changes)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signs the ranks' certificates: mutual TLS on the internal port");
ABSL_FLAG(std::string, api_key_file, "",
          "API keys the public services require, one \"TOKEN [TENANT]\" a line (re-read when "
          "it changes); health and reflection stay open");
ABSL_FLAG(int32_t, metrics_port, 9400, "Prometheus /metrics port (0: any)");
ABSL_FLAG(int32_t, http_port, -1,
          "OpenAI-compatible HTTP API port on --host: /v1/completions, /v1/chat/completions, "
          "/v1/models, /health; TLS and API keys as on --port (-1: none, 0: any)");
ABSL_FLAG(int32_t, http_threads, 2,
          "Threads that run every HTTP connection's I/O (event-driven: connections cost memory, "
          "not threads)");
ABSL_FLAG(int64_t, http_max_connections, 4096,
          "Most open HTTP connections; more are closed as they arrive");
ABSL_FLAG(double, http_timeout_s, 30,
          "Seconds an HTTP client may take to send a complete request, counted from its "
          "connection or its previous response: slow senders and idle keep-alive connections "
          "are closed");
ABSL_FLAG(int32_t, http_max_n, 16, "Most choices (n) one HTTP request may ask for");
ABSL_FLAG(std::string, chat_template, "",
          "Jinja chat template file for /v1/chat/completions (default: the model's "
          "chat_template.jinja or tokenizer_config.json's chat_template)");
ABSL_FLAG(std::string, model, "",
          "Model directory: config.json, generation_config.json and the tokenizer files are read, "
          "no weights (the ranks digest theirs; see --expected_weights_digest); required");
ABSL_FLAG(std::string, expected_weights_digest, "",
          "Serve only a model whose weights digest (as shift-inspect prints it) is this: a "
          "group whose ranks loaded other weights is refused when it completes (empty: any "
          "model the ranks agree on, with the router's config.json)");
ABSL_FLAG(std::string, model_name, "", "Name reported by GetModelInfo (default: directory name)");
ABSL_FLAG(uint32_t, world_size, 1, "Ranks per worker group (1, 2, 4 or 8)");
ABSL_FLAG(uint32_t, sp_degree, 0,
          "The base (sp) mode's Ulysses degree k: k Ulysses groups, each over the TP shards of "
          "world_size / k ranks, so each rank holds 1/(world_size / k) of the weights; the "
          "shifted (tp) mode is TP over all ranks. Must divide --world_size; 0 means "
          "--world_size (pure SP: every rank holds the whole model), 1 TP only. Every rank "
          "must be started with the same value");
ABSL_FLAG(uint32_t, groups, 1,
          "Data-parallel worker groups (workers pass --group=0..G-1); requests go to the group "
          "with the least outstanding work");
ABSL_FLAG(int32_t, requeue_limit, shift::defaults::kRequeueLimit,
          "Times a request may move to another group when its group loses a rank; then "
          "UNAVAILABLE");
ABSL_FLAG(bool, stop_ranks_on_exit, false,
          "On SIGTERM, after the drain, tell the ranks to exit too. By default they keep their "
          "weights and reconnect to the next router on this internal port (a rollout reloads "
          "nothing); they stop on their own signal");
ABSL_FLAG(double, drain_timeout_s, shift::defaults::kDrainTimeoutSeconds,
          "On SIGTERM: stop admitting, let open requests finish for this long, then exit (a "
          "second signal exits at once)");
ABSL_FLAG(int64_t, block_size, shift::defaults::kBlockSize,
          "Tokens per KV block; must match the workers'");
ABSL_FLAG(std::string, shift_policy, "threshold",
          "How each step's mode is chosen: threshold (SP above --shift_threshold tokens), cost "
          "(the mode predicted faster by a model fitted to measured step times), tp or sp");
ABSL_FLAG(int64_t, shift_threshold, shift::defaults::kShiftThreshold,
          "Scheduled tokens above which a step runs in SP");
ABSL_FLAG(int64_t, max_num_batched_tokens, shift::defaults::kMaxNumBatchedTokens,
          "Most tokens scheduled in one step");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "Reuse the KV of full blocks shared with earlier prompts (same bits as computing them)");
ABSL_FLAG(int64_t, max_num_seqs, shift::defaults::kMaxNumSeqs, "Most sequences in one step");
ABSL_FLAG(int64_t, max_queued_requests, shift::defaults::kMaxQueuedRequests,
          "Most requests waiting for admission; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_model_len, 0,
          "Most prompt plus generated tokens per request (0: the model's context length)");
ABSL_FLAG(double, step_timeout_s, shift::defaults::kStepTimeoutSeconds,
          "Seconds a step may take before the group is re-formed");
ABSL_FLAG(double, heartbeat_timeout_s, shift::defaults::kHeartbeatTimeoutSeconds,
          "Seconds of worker silence before a rank is lost (ranks send a heartbeat every "
          "quarter of it, at most every second; a rank whose messages the kernel received but "
          "the router has not yet handled is not silent)");
ABSL_FLAG(int32_t, output_threads, shift::defaults::kOutputThreads,
          "Threads that detokenize and stream output to clients (a slow client holds up only "
          "its own stream)");
ABSL_FLAG(int64_t, max_undelivered_deltas, shift::defaults::kMaxUndeliveredDeltas,
          "Responses a Generate stream may hold unread before its request pauses");
ABSL_FLAG(double, stalled_stream_timeout_s, shift::defaults::kStalledStreamTimeoutSeconds,
          "Seconds a paused request (its client not reading) waits before it ends with "
          "RESOURCE_EXHAUSTED and its KV blocks are freed");
ABSL_FLAG(int64_t, max_request_bytes, shift::defaults::kMaxRequestBytes,
          "Largest Generate message accepted (bigger ones get RESOURCE_EXHAUSTED)");
ABSL_FLAG(double, handshake_timeout_s, 10,
          "A connection that has not finished its TLS and HTTP/2 handshake by then is closed "
          "(gRPC's default, 120 s, lets idle connections hold descriptors)");
ABSL_FLAG(int32_t, max_streams_per_connection, shift::defaults::kMaxStreamsPerConnection,
          "Concurrent calls one HTTP/2 connection may hold open on each gRPC port (announced "
          "to clients; a stream opened past it is refused with REFUSED_STREAM)");
ABSL_FLAG(int64_t, grpc_memory_bytes, int64_t{1} << 30,
          "Memory gRPC may use for buffers on each port (beyond it, new calls wait or fail)");
ABSL_FLAG(int64_t, max_stop_strings, shift::defaults::kMaxStopStrings,
          "Most sampling.stop strings in one request");
ABSL_FLAG(int64_t, max_stop_bytes, shift::defaults::kMaxStopBytes,
          "Most bytes of sampling.stop strings together in one request");
ABSL_FLAG(bool, async_scheduling, true,
          "Plan and send each step while the one before runs, its decodes carrying pending "
          "tokens the ranks resolve, so that ranks do not wait for the router between steps "
          "(the same tokens either way; the policy sees each step's time one step later); "
          "false: each step planned after the one before ends");
ABSL_FLAG(std::string, step_trace, "",
          "Append a JSON line per step here (its shape, mode, sequences, sampled tokens, "
          "predicted and measured seconds) for offline analysis; empty: none");
ABSL_FLAG(std::string, log_format, "text",
          "Log lines as text or json (one object a line: ts, level, component, msg, fields); "
          "gRPC's own lines too");
ABSL_FLAG(std::string, log_level, "info", "Lowest level logged: debug, info, warning or error");
ABSL_FLAG(std::string, ports_file, "",
          "Write \"grpc=PORT metrics=PORT internal=PORT health=PORT http=PORT\" here once "
          "serving (for scripts using port 0; -1 for a port not served)");

namespace shift {
namespace {

// The health service name a liveness probe checks (deploy/k8s uses it).
constexpr char kLivenessService[] = "shift.live";

absl::Status Serve() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  SHIFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                         LoadModelTokenizer(model_dir, config.vocab_size));
  RouterOptions options;
  SHIFT_ASSIGN_OR_RETURN(options.generation, LoadGenerationConfig(model_dir));
  options.model_name = absl::GetFlag(FLAGS_model_name);
  if (options.model_name.empty()) options.model_name = DirectoryBaseName(model_dir);
  // The router reads no weight: the ranks digest what they load, and the
  // router checks their reports agree with its config and each other.
  SHIFT_ASSIGN_OR_RETURN(const uint64_t config_digest, ConfigDigestOf(model_dir));
  std::optional<uint64_t> expected_weights_digest;
  if (const std::string pinned = absl::GetFlag(FLAGS_expected_weights_digest); !pinned.empty()) {
    SHIFT_ASSIGN_OR_RETURN(expected_weights_digest, ParseDigest(pinned));
  }
  options.world_size = absl::GetFlag(FLAGS_world_size);
  options.sp_degree = absl::GetFlag(FLAGS_sp_degree);
  options.num_groups = absl::GetFlag(FLAGS_groups);
  options.max_requeues = absl::GetFlag(FLAGS_requeue_limit);
  options.scheduler.block_size = absl::GetFlag(FLAGS_block_size);
  options.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  options.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs);
  options.scheduler.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  options.scheduler.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  if (options.scheduler.max_model_len == 0) {
    options.scheduler.max_model_len = config.max_position_embeddings;
  }
  options.shift_policy = absl::GetFlag(FLAGS_shift_policy);
  options.step_trace = absl::GetFlag(FLAGS_step_trace);
  options.async_scheduling = absl::GetFlag(FLAGS_async_scheduling);
  SHIFT_ASSIGN_OR_RETURN(const shift::LatencyTargetFlagValues targets, shift::LatencyTargetFlags());
  options.tpot_slo_ms = targets.tpot_ms;
  options.ttft_slo_ms = targets.ttft_ms;
  options.shift_threshold = absl::GetFlag(FLAGS_shift_threshold);
  options.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  options.step_timeout = absl::Seconds(absl::GetFlag(FLAGS_step_timeout_s));
  options.output.threads = absl::GetFlag(FLAGS_output_threads);
  options.output.stalled_stream_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_stalled_stream_timeout_s));
  options.max_undelivered_deltas = absl::GetFlag(FLAGS_max_undelivered_deltas);
  options.output.max_pending = options.max_undelivered_deltas;
  options.max_stop_strings = absl::GetFlag(FLAGS_max_stop_strings);
  options.max_stop_bytes = absl::GetFlag(FLAGS_max_stop_bytes);
  const int64_t max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (max_request_bytes < 1024 || max_request_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError("--max_request_bytes must be in 1024 .. 2^30");
  }

  if (options.num_groups < 1 || options.num_groups > defaults::kMaxGroups) {
    return absl::InvalidArgumentError(
        absl::StrCat("--groups must be in 1 .. ", defaults::kMaxGroups));
  }
  RouterMetrics metrics(options.model_name, static_cast<int>(options.num_groups));
  const std::string host = absl::GetFlag(FLAGS_host);
  SHIFT_RETURN_IF_ERROR(metrics.Serve(absl::StrCat(host, ":", absl::GetFlag(FLAGS_metrics_port))));
  // The internal port authenticates its callers: by the token, or by
  // mutual TLS when the token is turned off.
  std::string internal_token;
  SHIFT_ASSIGN_OR_RETURN(const std::string token_path,
                         InternalTokenPath(absl::GetFlag(FLAGS_internal_token_file)));
  if (token_path.empty()) {
    if (absl::GetFlag(FLAGS_tls_ca).empty()) {
      return absl::InvalidArgumentError(
          "--internal_token_file=none needs mutual TLS on the internal port (--tls_ca): "
          "otherwise any process that reaches it could register as a rank");
    }
  } else {
    SHIFT_ASSIGN_OR_RETURN(internal_token, LoadOrCreateInternalToken(token_path));
  }
  RendezvousService store(options.num_groups, internal_token);
  const double heartbeat_timeout_s = absl::GetFlag(FLAGS_heartbeat_timeout_s);
  if (!(heartbeat_timeout_s >= 0.1 && heartbeat_timeout_s <= 3600)) {
    return absl::InvalidArgumentError("--heartbeat_timeout_s must be in [0.1, 3600]");
  }
  WorkerHubOptions hub_options;
  hub_options.heartbeat_timeout = absl::Seconds(heartbeat_timeout_s);
  // Ranks beat at least four times per timeout, so that one late beat is
  // not a lost rank.
  hub_options.heartbeat_interval = std::min(absl::Seconds(1), hub_options.heartbeat_timeout / 4);
  hub_options.num_groups = options.num_groups;
  hub_options.world_size = options.world_size;
  hub_options.sp_degree = options.sp_degree != 0 ? options.sp_degree : options.world_size;
  hub_options.block_size = static_cast<uint32_t>(options.scheduler.block_size);
  hub_options.config_digest = config_digest;
  hub_options.expected_weights_digest = expected_weights_digest;
  hub_options.internal_token = internal_token;
  hub_options.vocab_size = config.vocab_size;
  WorkerHub hub(
      [&store](uint32_t group, uint64_t generation, std::map<uint32_t, std::string> tickets) {
        store.AdvanceGeneration(group, generation, std::move(tickets));
      },
      hub_options);
  RealClock clock;
  SHIFT_ASSIGN_OR_RETURN(std::unique_ptr<Router> router,
                         Router::Create(options, config, *tokenizer, &hub, &metrics, &clock));

  grpc::EnableDefaultHealthCheckService(true);
  // Reflection of the public port's services and their files only.
  PublicReflection reflection;
  const TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                     absl::GetFlag(FLAGS_tls_ca)};
  SHIFT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> public_credentials,
                         ServerCredentials({tls.cert, tls.key, ""}, false));
  SHIFT_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> internal_credentials,
                         ServerCredentials(tls, !tls.ca.empty()));
  std::unique_ptr<ApiKeys> keys;
  GenerationService::Authenticator authenticate;
  if (const std::string file = absl::GetFlag(FLAGS_api_key_file); !file.empty()) {
    SHIFT_ASSIGN_OR_RETURN(keys, ApiKeys::FromFile(file));
    authenticate = [&keys, &metrics](const grpc::ServerContextBase& ctx) {
      absl::StatusOr<std::string> tenant = keys->Authenticate(ctx);
      if (!tenant.ok()) metrics.AuthFailure();
      return tenant;
    };
  }
  // Declared before the lanes: tasks still queued there when the router
  // stops run (and fail) while the HTTP front they answer exists.
  std::unique_ptr<OpenAiService> openai;
  std::unique_ptr<HttpServer> http;
  AdmissionLanes lanes;
  GenerationService generation(router.get(), &lanes, std::move(authenticate));

  std::vector<std::unique_ptr<grpc::Server>> servers;
  const int64_t grpc_memory = absl::GetFlag(FLAGS_grpc_memory_bytes);
  if (grpc_memory < (int64_t{16} << 20)) {
    return absl::InvalidArgumentError("--grpc_memory_bytes must be at least 16 MiB");
  }
  const double handshake_timeout_s = absl::GetFlag(FLAGS_handshake_timeout_s);
  if (!(handshake_timeout_s >= 0.1 && handshake_timeout_s <= 3600)) {
    return absl::InvalidArgumentError("--handshake_timeout_s must be in [0.1, 3600]");
  }
  const int32_t max_streams = absl::GetFlag(FLAGS_max_streams_per_connection);
  if (max_streams < 1) {
    return absl::InvalidArgumentError("--max_streams_per_connection must be at least 1");
  }
  auto serve = [&servers, max_request_bytes, grpc_memory, handshake_timeout_s, max_streams](
                   const std::string& host, int32_t port,
                   std::shared_ptr<grpc::ServerCredentials> credentials,
                   std::vector<grpc::Service*> services) -> absl::StatusOr<int> {
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(static_cast<int>(max_request_bytes));
    grpc::ResourceQuota quota(absl::StrCat("shift-router:", port));
    quota.Resize(static_cast<size_t>(grpc_memory));
    builder.SetResourceQuota(quota);
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                               static_cast<int>(handshake_timeout_s * 1000));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, max_streams);
    int bound = 0;
    builder.AddListeningPort(absl::StrCat(host, ":", port), std::move(credentials), &bound);
    for (grpc::Service* service : services) builder.RegisterService(service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (server == nullptr || bound == 0) {
      return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", host, ":", port));
    }
    server->GetHealthCheckService()->SetServingStatus(false);
    servers.push_back(std::move(server));
    return bound;
  };
  const std::string internal_host = absl::GetFlag(FLAGS_internal_host);
  SHIFT_ASSIGN_OR_RETURN(const int internal_port,
                         serve(internal_host, absl::GetFlag(FLAGS_internal_port),
                               internal_credentials, {&hub, &store}));
  SHIFT_ASSIGN_OR_RETURN(const int port, serve(host, absl::GetFlag(FLAGS_port), public_credentials,
                                               {&generation, &reflection}));
  // The OpenAI-compatible HTTP front, over the same router, lanes and keys.
  if (const int32_t http_port = absl::GetFlag(FLAGS_http_port); http_port >= 0) {
    OpenAiServiceOptions openai_options;
    openai_options.model_dir = model_dir;
    openai_options.chat_template_file = absl::GetFlag(FLAGS_chat_template);
    openai_options.max_choices = absl::GetFlag(FLAGS_http_max_n);
    SHIFT_ASSIGN_OR_RETURN(openai, OpenAiService::Create(router.get(), *tokenizer, &lanes,
                                                         keys.get(), &metrics, openai_options));
    HttpServerOptions http_options;
    http_options.host = host;
    http_options.port = http_port;
    http_options.threads = absl::GetFlag(FLAGS_http_threads);
    http_options.tls_cert = tls.cert;
    http_options.tls_key = tls.key;
    http_options.max_body_bytes = max_request_bytes;
    http_options.max_connections = absl::GetFlag(FLAGS_http_max_connections);
    const double timeout_s = absl::GetFlag(FLAGS_http_timeout_s);
    if (!(timeout_s >= 0.1 && timeout_s <= 3600)) {
      return absl::InvalidArgumentError("--http_timeout_s must be in [0.1, 3600]");
    }
    http_options.request_timeout = absl::Seconds(timeout_s);
    if (http_options.max_connections < 1) {
      return absl::InvalidArgumentError("--http_max_connections must be at least 1");
    }
    SHIFT_ASSIGN_OR_RETURN(
        http, HttpServer::Start(http_options,
                                [service = openai.get()](HttpRequest request,
                                                         std::shared_ptr<HttpExchange> exchange) {
                                  service->Handle(std::move(request), std::move(exchange));
                                }));
  }
  int health_port = -1;
  if (absl::GetFlag(FLAGS_health_port) >= 0) {
    // Health, and reflection (public files only; gRPC refuses a server with
    // no service of its own beside the default health service).
    SHIFT_ASSIGN_OR_RETURN(health_port, serve(host, absl::GetFlag(FLAGS_health_port),
                                              grpc::InsecureServerCredentials(), {&reflection}));
  }
  // Readiness ("" and shift.v1.Generation) follows the groups; liveness
  // ("shift.live") holds while the process runs, so a probe on it does not
  // restart a router that waits for its workers or drains.
  auto set_health = [&servers](bool serving) {
    for (const std::unique_ptr<grpc::Server>& server : servers) {
      server->GetHealthCheckService()->SetServingStatus("", serving);
      server->GetHealthCheckService()->SetServingStatus("shift.v1.Generation", serving);
    }
  };
  for (const std::unique_ptr<grpc::Server>& server : servers) {
    server->GetHealthCheckService()->SetServingStatus(kLivenessService, true);
  }
  Log(LogLevel::kInfo, "router",
      absl::StrFormat(
          "serving %s on %s:%d%s%s%s, ranks on %s:%d%s, /metrics on %s:%d; waiting for %u "
          "group(s) of %u rank(s)",
          options.model_name, host, port, tls.cert.empty() ? "" : " (TLS)",
          keys ? " (API keys)" : "",
          http ? absl::StrCat(", OpenAI HTTP API on ", host, ":", http->port()) : "", internal_host,
          internal_port, tls.ca.empty() ? (tls.cert.empty() ? "" : " (TLS)") : " (mutual TLS)",
          host, metrics.port(), options.num_groups, options.world_size),
      {{"event", "serving"}});
  if (const std::string file = absl::GetFlag(FLAGS_ports_file); !file.empty()) {
    std::ofstream(file) << "grpc=" << port << " metrics=" << metrics.port()
                        << " internal=" << internal_port << " health=" << health_port
                        << " http=" << (http ? http->port() : -1) << "\n";
  }

  // Health follows the group's readiness until SIGTERM or SIGINT.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  timespec tick{0, 200 * 1000 * 1000};
  for (int ticks = 0;; ++ticks) {
    set_health(router->ready());
    if (ticks % 5 == 0) ReturnFreeHeap(defaults::kFreeHeapKeptBytes);
    if (http) metrics.SetHttpConnections(static_cast<double>(http->connections()));
    if (sigtimedwait(&signals, nullptr, &tick) > 0) break;
  }
  // Drain: no new requests, open ones finish (or a second signal cuts it short).
  set_health(false);
  const absl::Duration drain = absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s));
  Log(LogLevel::kInfo, "router", absl::StrCat("draining (up to ", absl::FormatDuration(drain), ")"),
      {{"event", "drain_begun"}});
  const absl::Time drain_end = absl::Now() + drain;
  timespec now{0, 0};
  bool drained = false;
  while (!(drained = router->Drain(std::min(absl::Milliseconds(200), drain_end - absl::Now()))) &&
         absl::Now() < drain_end) {
    if (sigtimedwait(&signals, nullptr, &now) > 0) break;
  }
  Log(LogLevel::kInfo, "router",
      absl::StrCat(drained ? "every request finished" : "requests still open end with UNAVAILABLE",
                   "; stopping"),
      {{"event", "drain_done"}, {"drained", drained ? "true" : "false"}});
  router->Stop();
  http.reset();  // open HTTP requests ended with the router's Stop
  // The ranks keep their weights and wait for the next router (a rollout),
  // unless asked to stop with it.
  const bool stop_ranks = absl::GetFlag(FLAGS_stop_ranks_on_exit);
  for (uint32_t g = 0; g < options.num_groups; ++g) {
    hub.Shutdown(g, stop_ranks ? "the router is stopping" : "the router is restarting",
                 /*reconnect=*/!stop_ranks);
  }
  for (const std::unique_ptr<grpc::Server>& server : servers) {
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  // Signals are taken by sigtimedwait in Serve, so block them in every thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  shift::InitProgram(argc, argv,
                     "Serves shift.v1.Generation: schedules every step of a worker group and "
                     "runs each in TP or SP.",
                     "shift-router --model=DIR --world_size=P [--port=50051]");
  if (const absl::Status logging =
          shift::ConfigureLogging(absl::GetFlag(FLAGS_log_format), absl::GetFlag(FLAGS_log_level));
      !logging.ok()) {
    return shift::ReportFailure(logging);
  }
  shift::RouteGrpcLogs();
  shift::RaiseOpenFileLimit();
  const absl::Status status = shift::Serve();
  if (!status.ok()) return shift::ReportFailure(status);
  return 0;
}
