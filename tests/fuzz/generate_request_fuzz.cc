// A Generate request of arbitrary bytes, the way the service takes it:
// ParseGenerateRequest (which counts stop strings on the wire), then the
// router's validation (Router::Submit with no worker group). Bytes are
// refused with INVALID_ARGUMENT and a reason, or pass validation and meet
// UNAVAILABLE (no group is ready). Never a crash, and never anything held:
// a valid request goes nowhere.
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "common/tokenizer.h"
#include "core/clock.h"
#include "router/generation_service.h"
#include "router/router.h"
#include "router/router_metrics.h"
#include "router/worker_hub.h"
#include "tests/fuzz/fuzz_util.h"
#include "tools/mkmodel.h"

namespace {

class NullSink final : public shift::RequestSink {
 public:
  bool OnDelta(shift::v1::GenerateDelta) override { return true; }
  void OnFinal(shift::v1::GenerateFinal) override {}
  void OnError(absl::Status) override {}
};

struct World {
  std::unique_ptr<shift::Tokenizer> tokenizer;
  shift::ModelConfig config;
  shift::WorkerHub hub;
  shift::RouterMetrics metrics;
  shift::RealClock clock;
  std::unique_ptr<shift::Router> router;
};
World* world = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  world = new World();
  auto tokenizer = shift::Tokenizer::FromFile(shift::fuzz::SharedData() +
                                              "/tokenizers/llama-bpe.tokenizer.json");
  shift::fuzz::Require(tokenizer.status());
  world->tokenizer = *std::move(tokenizer);
  auto config = shift::PresetConfig("llama3-8b");
  shift::fuzz::Require(config.status());
  world->config = *config;
  shift::RouterOptions options;
  options.model_name = "fuzz";
  options.scheduler.max_model_len = 8192;
  auto router = shift::Router::Create(options, world->config, *world->tokenizer, &world->hub,
                                      &world->metrics, &world->clock);
  shift::fuzz::Require(router.status());
  world->router = *std::move(router);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shift::v1::GenerateRequest request;
  const shift::RouterOptions& options = world->router->options();
  const absl::Status parsed =
      shift::ParseGenerateRequest(absl::string_view(reinterpret_cast<const char*>(data), size),
                                  options.max_stop_strings, options.max_stop_bytes, &request);
  if (!parsed.ok()) {
    if (parsed.code() != absl::StatusCode::kInvalidArgument || parsed.message().empty()) {
      shift::fuzz::Fail("a parse refusal that is not INVALID_ARGUMENT with a reason");
    }
    return 0;
  }
  NullSink sink;
  const absl::StatusOr<uint64_t> id = world->router->Submit(request, &sink, "tenant");
  if (id.ok()) shift::fuzz::Fail("a request was queued without a worker group");
  const absl::StatusCode code = id.status().code();
  if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kUnavailable) {
    shift::fuzz::Fail("a refusal that is neither INVALID_ARGUMENT nor UNAVAILABLE");
  }
  if (id.status().message().empty()) shift::fuzz::Fail("a refusal without a reason");
  return 0;
}
