// Finding a model's chat template (see chat_template.h).
#include "jinja/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace jinja {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return text.str();
}

}  // namespace

absl::StatusOr<std::string> ChatTemplateFromConfig(const std::string& config_json, bool has_tools,
                                                   const std::string& source) {
  const auto config = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return absl::NotFoundError(absl::StrCat(source, " has no chat_template"));
  }
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": chat_template must be a string or a list of {name, template}"));
  }
  const nlohmann::json* tool_use = nullptr;
  const nlohmann::json* fallback = nullptr;
  for (const auto& entry : *it) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
        !entry["name"].is_string() || !entry["template"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": each named chat_template needs a string name and template"));
    }
    if (entry["name"] == "tool_use") tool_use = &entry["template"];
    if (entry["name"] == "default") fallback = &entry["template"];
  }
  if (has_tools && tool_use != nullptr) return tool_use->get<std::string>();
  if (fallback != nullptr) return fallback->get<std::string>();
  return absl::NotFoundError(absl::StrCat(
      source, " has several chat templates and none is named \"default\" (give --chat_template)"));
}

absl::StatusOr<std::string> LoadChatTemplate(const std::string& model_dir,
                                             const std::string& override_file, bool has_tools) {
  if (!override_file.empty()) return ReadFile(override_file);
  const std::filesystem::path dir(model_dir);
  std::error_code ec;
  // transformers lets chat_template.jinja override tokenizer_config.json.
  if (const auto file = dir / "chat_template.jinja"; std::filesystem::exists(file, ec)) {
    return ReadFile(file.string());
  }
  const auto config = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(config, ec)) {
    return absl::NotFoundError(absl::StrCat(model_dir,
                                            " has no chat_template.jinja and no "
                                            "tokenizer_config.json"));
  }
  auto text = ReadFile(config.string());
  if (!text.ok()) return text.status();
  return ChatTemplateFromConfig(*text, has_tools, config.string());
}

}  // namespace jinja
