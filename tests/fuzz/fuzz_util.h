// What the fuzz targets share: where the shared data is, and how a broken
// property ends the run (abort, so libFuzzer and the replay driver both
// report the input).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"

namespace shift::fuzz {

// The shared data folder (tokenizers): $SHIFT_SHARED_DATA, else the one
// this build was configured with.
inline std::string SharedData() {
  if (const char* dir = std::getenv("SHIFT_SHARED_DATA"); dir != nullptr) return dir;
  return SHIFT_FUZZ_SHARED_DATA;
}

[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "fuzz property broken: %s\n", what);
  std::abort();
}

inline void Require(const absl::Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "fuzz set-up failed: %s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace shift::fuzz
