// The public face of jinja/: parse a chat template once, render it with
// variables under the sandbox's limits, as Hugging Face transformers does
// (Jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks).
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace jinja {

struct Stmt;

// What one render may use; past a limit it fails with kResourceExhausted.
struct Limits {
  size_t max_output_bytes = 8 << 20;      // the output and any one string
  int64_t max_loop_iterations = 1000000;  // all loop iterations together
  int max_recursion_depth = 100;          // macro calls inside macro calls
};

struct RenderOptions {
  Limits limits;
  // The local time strftime_now formats; the current time when empty.
  std::function<std::tm()> now;
};

// Errors from Parse and Render:
//  - kAborted: the template called raise_exception(msg); the message is msg.
//  - kInvalidArgument: a syntax or runtime error, the message prefixed with
//    Jinja2's or Python's class name ("UndefinedError: 'x' is undefined").
//  - kResourceExhausted: a limit was reached ("LimitError: ...").
class Template {
 public:
  static absl::StatusOr<Template> Parse(std::string_view source);

  // Renders with `variables` (a JSON object: messages, tools, bos_token...).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables,
                                     const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const std::vector<std::unique_ptr<Stmt>>> body)
      : body_(std::move(body)) {}
  std::shared_ptr<const std::vector<std::unique_ptr<Stmt>>> body_;
};

}  // namespace jinja
