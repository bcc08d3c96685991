// Template: lex, parse, then render with globals and the caller's variables.
#include "jinja/template.h"

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/interpreter.h"
#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/status_macros.h"

namespace jinja {

absl::StatusOr<Template> Template::Parse(std::string_view source) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  JINJA_ASSIGN_OR_RETURN(Body body, jinja::Parse(tokens));
  return Template(std::make_shared<const Body>(std::move(body)));
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& variables,
                                             const RenderOptions& options) const {
  if (!variables.is_object() && !variables.is_null()) {
    return absl::InvalidArgumentError("template variables must be a JSON object");
  }
  auto globals = std::make_shared<Scope>();
  AddGlobals(*globals);
  auto root = std::make_shared<Scope>();
  root->parent = globals;
  if (variables.is_object()) {
    for (const auto& [name, value] : variables.items()) {
      JINJA_ASSIGN_OR_RETURN(root->vars[name], Value::FromJson(value));
    }
  }
  Interpreter interpreter(options);
  return interpreter.Run(*body_, root);
}

}  // namespace jinja
