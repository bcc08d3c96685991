// Jinja2's filters, tests, globals and the Python methods templates call
// (str.strip, dict.items...), each with Jinja2's and Python's semantics.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "jinja/value.h"

namespace jinja {

class Interpreter;
struct Scope;

// Known at parse time, as Jinja2 checks filter and test names when compiling.
bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

absl::StatusOr<Value> ApplyFilter(Interpreter& in, std::string_view name, const Value& input,
                                  CallArgs& args);
absl::StatusOr<bool> ApplyTest(Interpreter& in, std::string_view name, const Value& input,
                               CallArgs& args);

// A method of a str, dict or list bound to self; nullopt when there is none.
// Methods that would change a value are refused (an undefined that raises
// SecurityError when used), as in ImmutableSandboxedEnvironment.
std::optional<Value> BoundMethod(const Value& self, std::string_view name);

// range, namespace, dict, raise_exception, strftime_now.
void AddGlobals(Scope& scope);

}  // namespace jinja
