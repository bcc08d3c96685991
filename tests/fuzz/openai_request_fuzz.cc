// An OpenAI API request body of arbitrary bytes, the way the HTTP front
// takes it: the nesting bound counted without parsing, the JSON parse (not
// recursive in nlohmann's parser), then ParseOpenAiRequest for both
// endpoints. Each is refused with a reason or read; never a crash.
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "router/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  if (shift::JsonNestingDepth(body) > 64) return 0;  // refused as the service does
  const auto parsed = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return 0;
  shift::OpenAiLimits limits;
  limits.model_name = "tiny";
  for (auto endpoint : {shift::OpenAiEndpoint::kCompletions, shift::OpenAiEndpoint::kChat}) {
    auto request = shift::ParseOpenAiRequest(endpoint, parsed, limits);
    if (request.ok() && request->n < 1) __builtin_trap();  // n is always checked
  }
  return 0;
}
