#include "sim/hardware_profile.h"

#include <fstream>
#include <limits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace shift::sim {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One number of a profile: its JSON path, where it lives, whether a profile
// must give it, and its range.
struct Field {
  std::string path;
  double* number = nullptr;
  int* integer = nullptr;
  bool required = true;
  double lo = 0, hi = kInf;
};

std::vector<Field> Fields(HardwareProfile* p) {
  std::vector<Field> f = {
      {"gpus", nullptr, &p->gpus, true, 1, 1024},
      {"memory_bytes", &p->memory_bytes, nullptr, true, 1, kInf},
      {"memory_utilization", &p->memory_utilization, nullptr, false, 0.01, 1},
      {"activation_reserve_bytes", &p->activation_reserve_bytes, nullptr, false, 0, kInf},
      {"kv_cache_bytes", &p->kv_cache_bytes, nullptr, false, 0, kInf},
      {"memory_bandwidth", &p->memory_bandwidth, nullptr, true, 1, kInf},
      {"gemm_half_rows", &p->gemm_half_rows, nullptr, true, 0, kInf},
      {"attention_efficiency", &p->attention_efficiency, nullptr, true, 1e-6, 1},
      {"bandwidth_efficiency", &p->bandwidth_efficiency, nullptr, true, 1e-6, 1},
      {"activation_bytes", nullptr, &p->activation_bytes, false, 1, 8},
      {"weight_bytes", nullptr, &p->weight_bytes, false, 0, 8},
      {"step_overhead_s", &p->step_overhead_s, nullptr, true, 0, 10},
      {"layer_overhead_s", &p->layer_overhead_s, nullptr, false, 0, 1},
      {"loop_overhead_s", &p->loop_overhead_s, nullptr, false, 0, 10},
      {"switch_overhead_s", &p->switch_overhead_s, nullptr, false, 0, 10},
  };
  for (auto [name, c] : {std::pair<const char*, Collective*>{"all_reduce", &p->all_reduce},
                         {"all_to_all", &p->all_to_all},
                         {"gather", &p->gather}}) {
    f.push_back({absl::StrCat(name, ".latency_s"), &c->latency_s, nullptr, true, 0, 1});
    f.push_back({absl::StrCat(name, ".bus_bandwidth"), &c->bus_bandwidth, nullptr, true, 1, kInf});
  }
  for (auto& [type, value] : p->peak_flops) {
    f.push_back({"peak_flops." + type, &value, nullptr, true, 1, kInf});
    f.push_back({"gemm_efficiency." + type, &p->gemm_efficiency[type], nullptr, true, 1e-6, 1});
  }
  return f;
}

// The value at a dotted path, or null.
const nlohmann::json* At(const nlohmann::json& j, const std::string& path) {
  const nlohmann::json* at = &j;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (!at->is_object()) return nullptr;
    auto it = at->find(std::string(part));
    if (it == at->end()) return nullptr;
    at = &*it;
  }
  return at;
}

}  // namespace

absl::StatusOr<HardwareProfile> ParseHardwareProfile(const nlohmann::json& j,
                                                     const std::string& origin) {
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
  };
  if (!j.is_object()) return error("not a JSON object");
  HardwareProfile p;
  if (!j.contains("name") || !j["name"].is_string()) return error("needs \"name\" (a string)");
  p.name = j["name"].get<std::string>();
  if (j.contains("overlap")) {
    if (!j["overlap"].is_boolean()) return error("\"overlap\" must be true or false");
    p.overlap = j["overlap"].get<bool>();
  }
  if (!j.contains("peak_flops") || !j["peak_flops"].is_object() || j["peak_flops"].empty()) {
    return error("needs \"peak_flops\": {\"bf16\": FLOP/s, ...}");
  }
  for (auto& [type, value] : j["peak_flops"].items()) {
    if (type != "fp8" && type != "bf16" && type != "f32") {
      return error(absl::StrCat("peak_flops.", type, ": the types are fp8, bf16 and f32"));
    }
    p.peak_flops[type] = 0;
    p.gemm_efficiency[type] = 0;
  }
  if (!j.contains("sources") || !j["sources"].is_object()) {
    return error("needs \"sources\": where each number comes from, by its path");
  }
  for (auto& [path, text] : j["sources"].items()) {
    if (!text.is_string() || text.get<std::string>().empty()) {
      return error(absl::StrCat("sources.", path, " must be a non-empty string"));
    }
    p.sources[path] = text.get<std::string>();
  }
  // A misspelt optional number would be silently ignored: refuse any key
  // the profile does not know.
  const std::vector<Field> fields = Fields(&p);
  for (auto& [key, value] : j.items()) {
    if (key == "name" || key == "overlap" || key == "sources" || key == "fit") continue;
    const bool group = value.is_object();
    bool known = false;
    for (const Field& f : fields) {
      if (group ? absl::StartsWith(f.path, key + ".") : f.path == key) known = true;
    }
    if (group) {
      for (auto& [inner, unused] : value.items()) {
        bool inner_known = false;
        for (const Field& f : fields) inner_known = inner_known || f.path == key + "." + inner;
        if (!inner_known && key != "peak_flops" && key != "gemm_efficiency") {
          return error(absl::StrCat("unknown number \"", key, ".", inner, "\""));
        }
      }
    }
    if (!known) return error(absl::StrCat("unknown field \"", key, "\""));
  }
  const nlohmann::json efficiencies = j.value("gemm_efficiency", nlohmann::json::object());
  for (const auto& [type, unused] : efficiencies.items()) {
    if (!p.peak_flops.contains(type)) {
      return error(absl::StrCat("gemm_efficiency.", type, " has no peak_flops.", type));
    }
  }
  for (const Field& f : fields) {
    const nlohmann::json* v = At(j, f.path);
    if (v == nullptr) {
      if (f.required) return error(absl::StrCat("needs \"", f.path, "\""));
      continue;
    }
    if (!v->is_number()) return error(absl::StrCat(f.path, " must be a number"));
    const double x = v->get<double>();
    if (!(x >= f.lo && x <= f.hi)) {
      return error(absl::StrCat(f.path, " = ", x, " is outside [", f.lo, ", ", f.hi, "]"));
    }
    if (f.integer != nullptr) {
      if (x != static_cast<int>(x)) return error(absl::StrCat(f.path, " must be an integer"));
      *f.integer = static_cast<int>(x);
    } else {
      *f.number = x;
    }
    if (!p.sources.contains(f.path)) {
      return error(absl::StrCat(f.path, " has no source: add \"sources\": {\"", f.path,
                                "\": \"where it comes from\"}"));
    }
  }
  return p;
}

absl::StatusOr<HardwareProfile> LoadHardwareProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--hardware: cannot read \"", path, "\""));
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false,
                                                 /*ignore_comments=*/true);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return ParseHardwareProfile(j, path);
}

nlohmann::json HardwareProfileJson(const HardwareProfile& profile) {
  HardwareProfile p = profile;
  nlohmann::json j = {{"name", p.name}, {"overlap", p.overlap}};
  for (const Field& f : Fields(&p)) {
    if (!f.required && !p.sources.contains(f.path)) continue;  // left at its default
    nlohmann::json* at = &j;
    for (absl::string_view part : absl::StrSplit(f.path, '.')) at = &(*at)[std::string(part)];
    *at = f.integer != nullptr ? nlohmann::json(*f.integer) : nlohmann::json(*f.number);
  }
  j["sources"] = p.sources;
  return j;
}

absl::Status SetProfileValue(HardwareProfile* profile, const std::string& path, double value,
                             const std::string& source) {
  for (const Field& f : Fields(profile)) {
    if (f.path != path) continue;
    if (!(value >= f.lo && value <= f.hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " = ", value, " is outside [", f.lo, ", ", f.hi, "]"));
    }
    if (f.integer != nullptr) {
      *f.integer = static_cast<int>(value);
    } else {
      *f.number = value;
    }
    profile->sources[path] = source;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("no profile number is called \"", path, "\""));
}

}  // namespace shift::sim
