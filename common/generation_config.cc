#include "common/generation_config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

namespace shift {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field \"", field, "\" ", why));
}

// An optional number within [low, high]; absent or null stays unset.
absl::StatusOr<std::optional<double>> GetNumber(const json& j, absl::string_view source,
                                                const char* field, double low, double high,
                                                absl::string_view range) {
  const auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < low ||
      it->get<double>() > high) {
    return FieldError(source, field, absl::StrCat("must be a number ", range));
  }
  return it->get<double>();
}

}  // namespace

absl::StatusOr<GenerationDefaults> ParseGenerationConfig(absl::string_view json_text,
                                                         absl::string_view source) {
  const json j = json::parse(json_text.begin(), json_text.end(), nullptr,
                             /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  GenerationDefaults g;
  if (const auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    const json list = it->is_array() ? *it : json::array({*it});
    for (const json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24)) {
        return FieldError(source, "eos_token_id",
                          "must be a token id or a list of them (integers in 0..16777215)");
      }
      g.eos_token_ids.push_back(id.get<int64_t>());
    }
  }
  auto temperature = GetNumber(j, source, "temperature", 0, 1e6, ">= 0");
  if (!temperature.ok()) return temperature.status();
  if (*temperature) g.temperature = static_cast<float>(**temperature);
  auto top_p = GetNumber(j, source, "top_p", 0, 1, "in (0, 1]");
  if (!top_p.ok()) return top_p.status();
  if (*top_p) {
    if (**top_p <= 0) return FieldError(source, "top_p", "must be a number in (0, 1]");
    g.top_p = static_cast<float>(**top_p);
  }
  if (const auto it = j.find("top_k"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > (1 << 30)) {
      return FieldError(source, "top_k", "must be an integer >= 0");
    }
    g.top_k = static_cast<int32_t>(it->get<int64_t>());
  }
  return g;
}

absl::StatusOr<GenerationDefaults> LoadGenerationConfig(const std::string& dir) {
  const std::string path = dir + "/generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return GenerationDefaults{};
  absl::StatusOr<std::string> text = ReadFileToString(path, size_t{16} << 20);
  if (!text.ok()) return text.status();
  return ParseGenerationConfig(*text, path);
}

}  // namespace shift
