// Walks the syntax tree: scopes, statements, expressions and the sandbox's
// limits. Internal to jinja/ (the API is template.h); builtins.cc calls back
// into it for attribute access, iteration, comparison and calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "jinja/ast.h"
#include "jinja/template.h"
#include "jinja/value.h"

namespace jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  absl::flat_hash_map<std::string, Value> vars;
};

// Errors a template causes, prefixed with the Jinja2/Python class name
// ("TypeError: ...") as render.py reports them.
absl::Status TemplateError(std::string_view type, std::string_view message);

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options);
  ~Interpreter();

  // Renders body with the given globals and variables.
  absl::StatusOr<std::string> Run(const Body& body, std::shared_ptr<Scope> root);

  const RenderOptions& options() const { return options_; }

  // Jinja2's environment.getattr / getitem (sandboxed), iter(), len(),
  // ordering comparison (-1/0/1), str(), and calling a value.
  absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
  absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
  absl::StatusOr<int64_t> Length(const Value& v);
  absl::StatusOr<int> Compare(const Value& a, const Value& b, std::string_view op);
  absl::StatusOr<bool> Contains(const Value& container, const Value& item);
  absl::StatusOr<std::string> Str(const Value& v);
  absl::StatusOr<Value> Call(const Value& callee, CallArgs& args);
  absl::StatusOr<Value> Modulo(const Value& a, const Value& b);

  // A new string of n bytes: an error past the output limit; counts as work.
  absl::Status ChargeString(size_t n);
  // One unit of work (a loop iteration, an element sorted...).
  absl::Status Charge(int64_t units);
  // Within the nesting limit (the caller counts the level) and charged.
  absl::Status EnterLevel();
  // A value built from the template: an error if it nests too deeply.
  absl::Status CheckDepth(const Value& v);
  // A namespace created during this render (emptied at the end, so cycles
  // through namespaces do not leak).
  Value NewNamespace();

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  absl::StatusOr<Flow> Exec(const Body& body, const std::shared_ptr<Scope>& scope,
                            std::string* out);
  absl::StatusOr<Flow> ExecStmt(const Stmt& s, const std::shared_ptr<Scope>& scope,
                                std::string* out);
  absl::StatusOr<Flow> ExecFor(const Stmt& s, const std::shared_ptr<Scope>& scope,
                               std::string* out);
  // Eval dispatches to one function per kind of expression, each kept out
  // of line so that the frame each level of nesting costs stays small.
  absl::StatusOr<Value> Eval(const Expr& e, const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalSequence(const Expr& e,
                                                       const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalDict(const Expr& e,
                                                   const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalGetattr(const Expr& e,
                                                      const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalGetitem(const Expr& e,
                                                      const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalSlice(const Expr& e,
                                                    const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalCall(const Expr& e,
                                                   const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalFilter(const Expr& e,
                                                     const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalTest(const Expr& e,
                                                   const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalUnary(const Expr& e,
                                                    const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalBinary(const Expr& e,
                                                     const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalAnd(const Expr& e,
                                                  const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalOr(const Expr& e,
                                                 const std::shared_ptr<Scope>& scope);
  [[gnu::noinline]] absl::StatusOr<Value> EvalCondExpr(const Expr& e,
                                                       const std::shared_ptr<Scope>& scope);
  absl::StatusOr<Value> EvalBinary(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<Value> EvalCompare(const Expr& e, const std::shared_ptr<Scope>& scope);
  absl::StatusOr<Value> ApplyFilterExpr(const Expr& e, Value input,
                                        const std::shared_ptr<Scope>& scope);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first,
                                    const std::shared_ptr<Scope>& scope);
  absl::Status Assign(const Expr& target, const Value& value, Scope& scope);
  absl::Status Append(std::string_view text, std::string* out);
  Value MakeMacro(const Stmt& s, const std::shared_ptr<Scope>& scope);

  RenderOptions options_;
  int64_t work_ = 0;
  int64_t work_limit_ = 0;
  int64_t iterations_ = 0;
  int depth_ = 0;
  int macro_depth_ = 0;
  std::vector<std::shared_ptr<Value::Object>> namespaces_;
};

}  // namespace jinja
