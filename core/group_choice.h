// Which data-parallel group takes a new request: the ready group with the
// least outstanding work, the first of equals. A request's work is its
// prompt plus the tokens it may generate. The router and the simulator
// both place requests with it.
#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "core/request.h"

namespace shift {

// The work a request adds to its group until it ends.
inline int64_t RequestWork(const Request& r) {
  return static_cast<int64_t>(r.prompt.size()) + r.params.max_tokens;
}

struct GroupLoad {
  bool ready = false;       // formed and able to take requests
  int64_t outstanding = 0;  // the work of its open requests
};

// The index of the group to take the next request; -1 when none is ready.
inline int PickLeastLoaded(absl::Span<const GroupLoad> groups) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(groups.size()); ++i) {
    if (!groups[i].ready) continue;
    if (best < 0 || groups[i].outstanding < groups[best].outstanding) best = i;
  }
  return best;
}

}  // namespace shift
