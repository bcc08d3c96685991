// Early-return helpers for absl::Status / absl::StatusOr inside jinja/, and
// Cat (StrCat that takes std::string_view: this Abseil's string_view is its own).
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define JINJA_CONCAT_INNER(a, b) a##b
#define JINJA_CONCAT(a, b) JINJA_CONCAT_INNER(a, b)

#define JINJA_RETURN_IF_ERROR(expr)             \
  do {                                          \
    if (absl::Status _st = (expr); !_st.ok()) { \
      return _st;                               \
    }                                           \
  } while (0)

#define JINJA_ASSIGN_OR_RETURN(lhs, expr) \
  JINJA_ASSIGN_OR_RETURN_IMPL(JINJA_CONCAT(_statusor_, __LINE__), lhs, expr)
#define JINJA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)

namespace jinja {
namespace cat_internal {
inline void Part(std::string* out, std::string_view s) { out->append(s); }
inline void Part(std::string* out, const char* s) { out->append(s); }
inline void Part(std::string* out, const std::string& s) { out->append(s); }
template <typename T>
requires(std::is_arithmetic_v<T> && !std::is_same_v<T, char>) void Part(std::string* out, T v) {
  absl::StrAppend(out, v);
}
}  // namespace cat_internal

template <typename... T>
void CatTo(std::string* out, const T&... parts) {
  (cat_internal::Part(out, parts), ...);
}
template <typename... T>
std::string Cat(const T&... parts) {
  std::string out;
  CatTo(&out, parts...);
  return out;
}

}  // namespace jinja
