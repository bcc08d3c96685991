// A chat template of arbitrary bytes, rendered with a fixed conversation:
// shift_jinja gives a clear error or an output within the sandbox's limits,
// and the same result twice (no hidden state, no hang, no crash).
#include <cstdint>
#include <string>

#include "jinja/template.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"

namespace {

const nlohmann::ordered_json& Variables() {
  static const auto* vars = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": "Weather in Paris?\u3000 "},
      {"role": "assistant", "content": null, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather",
                                          "arguments": {"city": "Paris", "days": 2.0}}}]},
      {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "c1"},
      {"role": "user", "content": [{"type": "text", "text": "Thanks 😀"}, {"type": "image"}]}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "n": 3, "f": 25.0, "xs": [3, 1, 2], "d": {"b": 1, "a": [true, null]}
  })"));
  return *vars;
}

jinja::RenderOptions Options() {
  jinja::RenderOptions options;
  // Small limits keep each input fast (the work bound is 100 steps per
  // allowed iteration); the unit tests check the limits at their defaults.
  options.limits.max_output_bytes = 16 << 10;
  options.limits.max_loop_iterations = 1000;
  options.limits.max_recursion_depth = 20;
  options.now = [] {
    std::tm tm{};
    tm.tm_year = 126;
    tm.tm_mday = 15;
    return tm;
  };
  return options;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto parsed = jinja::Template::Parse(source);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) shift::fuzz::Fail("a parse error without a message");
    return 0;
  }
  static const jinja::RenderOptions options = Options();
  auto first = parsed->Render(Variables(), options);
  auto second = parsed->Render(Variables(), options);
  if (first.ok() != second.ok()) shift::fuzz::Fail("two renders disagree on failing");
  if (!first.ok()) {
    if (first.status().message().empty() && first.status().code() != absl::StatusCode::kAborted) {
      shift::fuzz::Fail("a render error without a message");
    }
    if (first.status() != second.status()) shift::fuzz::Fail("two renders fail differently");
    return 0;
  }
  if (first->size() > options.limits.max_output_bytes) shift::fuzz::Fail("output past the limit");
  if (*first != *second) shift::fuzz::Fail("two renders differ");
  return 0;
}
