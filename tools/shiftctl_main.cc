// shiftctl: talk to a shift router from a terminal. `generate` streams text
// as it arrives (or, with --json, one JSON object per message); `health`,
// `status` and `model` ask the server how it is and what it serves.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "shift/v1/generation.grpc.pb.h"
#include "tools/client_flags.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "Router address (host:port)");
ABSL_FLAG(double, timeout_s, 600, "Give up after this many seconds (DEADLINE_EXCEEDED)");
ABSL_FLAG(bool, json, false, "Print messages as JSON (one object per line) instead of text");
ABSL_FLAG(std::string, service, "",
          "health: the service to ask about (\"\": the server; shift.v1.Generation: ready to "
          "serve; shift.live: the process runs)");
ABSL_FLAG(std::string, prompt, "", "generate: the prompt text");
ABSL_FLAG(std::string, prompt_ids, "", "generate: the prompt as comma-separated token ids");
ABSL_FLAG(bool, parse_special, false, "generate: recognise special tokens in --prompt");
ABSL_FLAG(uint32_t, max_tokens, 64, "generate: most tokens to generate");
ABSL_FLAG(bool, add_special_tokens, true,
          "generate: give --prompt the special tokens the model's files say a text prompt gets "
          "(BOS ...)");
ABSL_FLAG(std::optional<double>, temperature, std::nullopt,
          "generate: sampling temperature, 0 greedy (not given: the model's default, else greedy)");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt,
          "generate: nucleus sampling threshold (not given: the model's default, else 1)");
ABSL_FLAG(std::optional<uint32_t>, top_k, std::nullopt,
          "generate: keep the k most likely tokens, 0 all (not given: the model's default, else "
          "all)");
ABSL_FLAG(int64_t, seed, -1, "generate: sampling seed (-1: the server picks one)");
ABSL_FLAG(std::string, stop, "",
          "generate: stop strings, comma-separated (--stop=END,STOP), or a JSON array of "
          "strings for stops that hold a comma or start with '[' (--stop='[\"a, b\", \"c\"]')");
ABSL_FLAG(std::string, stop_token_ids, "", "generate: comma-separated stop token ids");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep generating past end-of-sequence");
ABSL_FLAG(uint32_t, logprobs, 0, "generate: alternatives to return per token (with --json)");

namespace shift {
namespace {

// TLS and the API key, from the flags (set once, in main).
ClientSecurity security;

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  AddApiKey(ctx.get(), security.api_key);
  ctx->set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(1000 * absl::GetFlag(FLAGS_timeout_s))));
  return ctx;
}

// A message a person can act on, for each way a call fails.
int Fail(const grpc::Status& status) {
  const std::string address = absl::GetFlag(FLAGS_address);
  std::string why;
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      why = absl::StrCat("the router at ", address, " is unavailable: ", status.error_message());
      if (absl::StrContains(absl::AsciiStrToLower(status.error_message()), "handshake")) {
        absl::StrAppend(&why,
                        "\n(TLS failed: is the router's certificate signed by --tls_ca, "
                        "for this address?)");
      } else if (!security.tls && absl::StrContains(status.error_message(), "Socket closed")) {
        absl::StrAppend(&why, "\n(does the router use TLS? then pass --tls_ca)");
      } else {
        absl::StrAppend(&why, "\n(is shift-router running there, with a worker group formed?)");
      }
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      why = absl::StrCat("no complete answer from ", address, " within ",
                         absl::GetFlag(FLAGS_timeout_s), " s (--timeout_s)");
      break;
    case grpc::StatusCode::INVALID_ARGUMENT:
      why = absl::StrCat("the request was refused: ", status.error_message());
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      why = absl::StrCat("the server is full: ", status.error_message());
      break;
    case grpc::StatusCode::CANCELLED:
      why = absl::StrCat("the call was cancelled: ", status.error_message());
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      why = absl::StrCat("the router refused the call: ", status.error_message(),
                         " (--api_key_file or SHIFT_API_KEY)");
      break;
    case grpc::StatusCode::UNIMPLEMENTED:
      why = absl::StrCat(address, " does not serve this call (is it a shift router?)");
      break;
    default:
      why = absl::StrCat("error ", static_cast<int>(status.error_code()), ": ",
                         status.error_message());
  }
  std::fprintf(stderr, "shiftctl: %s\n", why.c_str());
  return 1;
}

// Proto's JSON mapping writes 64-bit integers as strings; shiftctl's JSON
// has them as numbers (`value` is the mapping's JSON of a `descriptor`).
void IntegersAsNumbers(const google::protobuf::Descriptor& descriptor, nlohmann::json& value);

// One value of `field` (an element, when it is repeated or a map's value).
void IntegerAsNumber(const google::protobuf::FieldDescriptor& field, nlohmann::json& value) {
  using google::protobuf::FieldDescriptor;
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_INT64 && value.is_string()) {
    value = std::stoll(value.get<std::string>());
  } else if (field.cpp_type() == FieldDescriptor::CPPTYPE_UINT64 && value.is_string()) {
    value = std::stoull(value.get<std::string>());
  } else if (field.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    IntegersAsNumbers(*field.message_type(), value);
  }
}

void IntegersAsNumbers(const google::protobuf::Descriptor& descriptor, nlohmann::json& value) {
  if (!value.is_object()) return;
  for (auto& [name, field_value] : value.items()) {
    const google::protobuf::FieldDescriptor* field = descriptor.FindFieldByName(name);
    if (field == nullptr) continue;
    if (field->is_map()) {
      for (auto& [key, v] : field_value.items()) {
        IntegerAsNumber(*field->message_type()->map_value(), v);
      }
    } else if (field->is_repeated() && field_value.is_array()) {
      for (nlohmann::json& v : field_value) IntegerAsNumber(*field, v);
    } else {
      IntegerAsNumber(*field, field_value);
    }
  }
}

// One message as one line of JSON, with the proto's field names and 64-bit
// integers as numbers. `every_field`: fields at their default too (a status
// lists rank 0 and a count of 0), for one-off answers; streamed messages
// carry only what is set.
void PrintJson(const google::protobuf::Message& message, bool every_field = false) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = every_field;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  nlohmann::json json = nlohmann::json::parse(text);
  IntegersAsNumbers(*message.GetDescriptor(), json);
  std::printf("%s\n", json.dump().c_str());
  std::fflush(stdout);
}

// --stop: a JSON array of strings when it starts with '[', else the strings
// between commas.
absl::StatusOr<std::vector<std::string>> ParseStops(const std::string& text) {
  if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(text), "[")) {
    const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    bool strings = json.is_array();
    if (strings) {
      for (const nlohmann::json& stop : json) strings = strings && stop.is_string();
    }
    if (!strings) {
      return absl::InvalidArgumentError(
          "--stop: a value starting with '[' must be a JSON array of strings");
    }
    return json.get<std::vector<std::string>>();
  }
  return std::vector<std::string>(absl::StrSplit(text, ',', absl::SkipEmpty()));
}

bool ParseIds(const std::string& text, const char* flag, std::vector<int32_t>* ids) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      std::fprintf(stderr, "shiftctl: --%s: \"%s\" is not a token id\n", flag,
                   std::string(part).c_str());
      return false;
    }
    ids->push_back(id);
  }
  return true;
}

int Generate(v1::Generation::Stub& stub) {
  v1::GenerateRequest request;
  if (!absl::GetFlag(FLAGS_prompt_ids).empty()) {
    std::vector<int32_t> ids;
    if (!ParseIds(absl::GetFlag(FLAGS_prompt_ids), "prompt_ids", &ids)) return 2;
    request.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  } else {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  }
  request.set_parse_special(absl::GetFlag(FLAGS_parse_special));
  request.set_add_special_tokens(absl::GetFlag(FLAGS_add_special_tokens));
  v1::SamplingParams* s = request.mutable_sampling();
  s->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  // Sampling flags not given leave the fields unset: the model's defaults.
  if (const auto t = absl::GetFlag(FLAGS_temperature)) s->set_temperature(static_cast<float>(*t));
  if (const auto p = absl::GetFlag(FLAGS_top_p)) s->set_top_p(static_cast<float>(*p));
  if (const auto k = absl::GetFlag(FLAGS_top_k)) s->set_top_k(*k);
  if (absl::GetFlag(FLAGS_seed) >= 0) s->set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  auto stops = ParseStops(absl::GetFlag(FLAGS_stop));
  if (!stops.ok()) return ReportFailure(stops.status());
  for (const std::string& stop : *stops) s->add_stop(stop);
  std::vector<int32_t> stop_ids;
  if (!ParseIds(absl::GetFlag(FLAGS_stop_token_ids), "stop_token_ids", &stop_ids)) return 2;
  s->mutable_stop_token_ids()->Add(stop_ids.begin(), stop_ids.end());
  s->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  s->set_top_logprobs(absl::GetFlag(FLAGS_logprobs));

  const bool json = absl::GetFlag(FLAGS_json);
  auto ctx = Context();
  auto reader = stub.Generate(ctx.get(), request);
  v1::GenerateResponse response;
  v1::GenerateFinal final;
  bool printed = false;
  while (reader->Read(&response)) {
    if (json) {
      PrintJson(response);
    } else if (response.has_delta()) {
      std::fputs(response.delta().text().c_str(), stdout);
      std::fflush(stdout);
      printed = true;
    }
    if (response.has_final()) final = response.final();
  }
  const grpc::Status status = reader->Finish();
  if (printed) std::printf("\n");
  if (!status.ok()) return Fail(status);
  if (!json) {
    const v1::Usage& u = final.usage();
    std::fprintf(stderr,
                 "[%s; %u prompt + %u generated tokens (%u from the prefix cache); first token "
                 "after %.1f ms, done after %.1f ms]\n",
                 v1::FinishReason_Name(final.finish_reason()).c_str(), u.prompt_tokens(),
                 u.completion_tokens(), u.cached_prompt_tokens(),
                 1000 * u.time_to_first_token_seconds(), 1000 * u.e2e_seconds());
  }
  return 0;
}

int Health() {
  auto stub = grpc::health::v1::Health::NewStub(Connect(absl::GetFlag(FLAGS_address), security));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  auto ctx = Context();
  const grpc::Status status = stub->Check(ctx.get(), request, &response);
  if (!status.ok()) return Fail(status);
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response, /*every_field=*/true);
  } else {
    std::printf(
        "%s\n",
        grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 3;
}

std::string Modes(const v1::ModeCounters& m) {
  return absl::StrCat(m.tp_steps(), " TP / ", m.sp_steps(), " SP steps, ", m.switches(),
                      " switches");
}

int Status(v1::Generation::Stub& stub) {
  v1::ServerStatus status;
  auto ctx = Context();
  const grpc::Status rpc = stub.GetStatus(ctx.get(), v1::GetStatusRequest(), &status);
  if (!rpc.ok()) return Fail(rpc);
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(status, /*every_field=*/true);
    return 0;
  }
  std::printf("uptime %.0f s%s; %u queued; %s\n", status.uptime_seconds(),
              status.draining() ? ", DRAINING" : "", status.queued_requests(),
              Modes(status.modes()).c_str());
  for (const v1::GroupStatus& g : status.groups()) {
    std::printf("group %u: %s, generation %llu, %u running, KV %u/%u blocks, last mode %s, %s\n",
                g.group(), g.ready() ? "ready" : "NOT READY",
                static_cast<unsigned long long>(g.generation()), g.running_sequences(),
                g.kv_blocks_used(), g.kv_blocks_total(), v1::Mode_Name(g.last_mode()).c_str(),
                Modes(g.modes()).c_str());
    for (const v1::RankStatus& r : g.ranks()) {
      std::printf("  rank %u: %s %s, %u KV blocks, %.1f MB of weights, metrics %s\n", r.rank(),
                  r.connected() ? "connected" : "MISSING", r.address().c_str(), r.kv_blocks(),
                  r.weight_bytes() / 1e6, r.metrics_address().c_str());
    }
  }
  return 0;
}

int Model(v1::Generation::Stub& stub) {
  v1::ModelInfo info;
  auto ctx = Context();
  const grpc::Status rpc = stub.GetModelInfo(ctx.get(), v1::GetModelInfoRequest(), &info);
  if (!rpc.ok()) return Fail(rpc);
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(info, /*every_field=*/true);
    return 0;
  }
  std::printf("%s (%s): %u layers, hidden %u, %u/%u heads x %u, vocab %u, max length %u\n",
              info.name().c_str(), info.architecture().c_str(), info.num_layers(),
              info.hidden_size(), info.num_heads(), info.num_kv_heads(), info.head_dim(),
              info.vocab_size(), info.max_model_len());
  const uint32_t sp = info.sp_degree() != 0 ? info.sp_degree() : info.world_size();
  std::printf(
      "%u group(s) of %u rank(s), base mode %u Ulysses x %u TP (each rank holds 1/%u of the "
      "weights); shift policy %s; eos %s\n",
      info.num_groups(), info.world_size(), sp, info.world_size() / sp, info.world_size() / sp,
      info.shift_policy().c_str(), absl::StrJoin(info.eos_token_ids(), ",").c_str());
  return 0;
}

}  // namespace
}  // namespace shift

int main(int argc, char** argv) {
  std::vector<char*> args = shift::InitProgram(
      argc, argv, "Talks to a shift router: generate text, check health, show status or model.",
      "shiftctl [--address=HOST:PORT] generate|health|status|model [flags]");
  if (args.size() != 2) {
    std::fprintf(stderr,
                 "shiftctl: name one command: generate, health, status or model "
                 "(--help lists the flags)\n");
    return 2;
  }
  const std::string command = args[1];
  absl::StatusOr<shift::ClientSecurity> security = shift::ClientSecurityFromFlags();
  if (!security.ok()) {
    std::fprintf(stderr, "shiftctl: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  shift::security = *std::move(security);
  if (command == "health") return shift::Health();
  auto stub =
      shift::v1::Generation::NewStub(shift::Connect(absl::GetFlag(FLAGS_address), shift::security));
  if (command == "generate") return shift::Generate(*stub);
  if (command == "status") return shift::Status(*stub);
  if (command == "model") return shift::Model(*stub);
  std::fprintf(stderr, "shiftctl: unknown command \"%s\": use generate, health, status or model\n",
               command.c_str());
  return 2;
}
