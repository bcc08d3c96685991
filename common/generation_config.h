// What a model's generation_config.json adds to config.json: every token id
// that ends generation, and the sampling defaults its authors chose.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace shift {

struct GenerationDefaults {
  std::vector<int64_t> eos_token_ids;  // as listed (an integer or a list)
  // Used when a request leaves them unset. do_sample is not read: like
  // other servers, shift samples whenever the temperature is above 0.
  std::optional<float> temperature;  // >= 0
  std::optional<float> top_p;        // in (0, 1]
  std::optional<int32_t> top_k;      // >= 0; 0: no limit
};

// Parses generation_config.json text; `source` names the file in errors,
// which also name the field. Unknown fields are ignored (transformers has
// dozens that a server does not apply).
absl::StatusOr<GenerationDefaults> ParseGenerationConfig(absl::string_view json_text,
                                                         absl::string_view source);
// DIR/generation_config.json; no file gives no defaults.
absl::StatusOr<GenerationDefaults> LoadGenerationConfig(const std::string& dir);

}  // namespace shift
