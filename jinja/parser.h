// Builds the syntax tree from tokens with Jinja2's grammar and operator
// precedence; bounds nesting so that hostile templates cannot exhaust the stack.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "jinja/ast.h"
#include "jinja/lexer.h"

namespace jinja {

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens);

}  // namespace jinja
