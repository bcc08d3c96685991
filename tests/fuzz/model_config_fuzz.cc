// config.json of arbitrary bytes: ParseModelConfig gives a clear error or a
// valid config, which writes back to JSON that parses to the same config.
#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  auto config = shift::ParseModelConfig(json, "config.json");
  if (!config.ok()) {
    if (config.status().message().empty()) shift::fuzz::Fail("an error without a message");
    return 0;
  }
  shift::fuzz::Require(shift::ValidateModelConfig(*config, "parsed"));
  auto again = shift::ParseModelConfig(shift::ModelConfigToJson(*config), "written");
  shift::fuzz::Require(again.status());
  if (shift::ModelConfigToJson(*again) != shift::ModelConfigToJson(*config)) {
    shift::fuzz::Fail("the written config does not read back the same");
  }
  return 0;
}
