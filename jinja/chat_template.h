// Finding a model's chat template as transformers does: --chat_template=FILE,
// else chat_template.jinja in the model directory, else `chat_template` in
// tokenizer_config.json (a string, or named templates: tool_use / default).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace jinja {

// The template's source text. override_file, when not empty, wins; has_tools
// picks `tool_use` over `default` among named templates. NotFound when the
// model has no chat template.
absl::StatusOr<std::string> LoadChatTemplate(const std::string& model_dir,
                                             const std::string& override_file, bool has_tools);

// Picks the template from a parsed tokenizer_config.json (see above);
// `source` names the file in messages.
absl::StatusOr<std::string> ChatTemplateFromConfig(const std::string& config_json, bool has_tools,
                                                   const std::string& source);

}  // namespace jinja
