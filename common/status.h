// Status helpers used everywhere: early-return macros for absl::Status and
// absl::StatusOr, and SHIFT_CHECK for internal invariants that must say which
// values broke them. Nothing here throws.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define SHIFT_STATUS_CONCAT_INNER(a, b) a##b
#define SHIFT_STATUS_CONCAT(a, b) SHIFT_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define SHIFT_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status shift_status_ = (expr);         \
    if (!shift_status_.ok()) return shift_status_; \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns its
// status from the enclosing function when it is not OK.
#define SHIFT_ASSIGN_OR_RETURN(lhs, expr) \
  SHIFT_ASSIGN_OR_RETURN_IMPL(SHIFT_STATUS_CONCAT(shift_statusor_, __LINE__), lhs, expr)
#define SHIFT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()

namespace shift::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* cond,
                                     const std::string& context) {
  std::fprintf(stderr, "%s:%d: check failed: %s %s\n", file, line, cond, context.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace shift::internal

// Aborts with file, line, the condition and the given context (any
// absl::StrCat arguments) when `cond` is false. For invariants only: errors a
// user or a file can cause are returned as absl::Status.
#define SHIFT_CHECK(cond, ...)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ::shift::internal::CheckFailed(__FILE__, __LINE__, #cond,                      \
                                     ::absl::StrCat("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                \
  } while (0)
