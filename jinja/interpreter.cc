// Walks the syntax tree with Jinja2's scoping (a for body's assignments live
// for one iteration; namespaces carry values out) and Python's operators.
#include "jinja/interpreter.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/pystr.h"
#include "jinja/status_macros.h"

namespace jinja {
namespace {

constexpr int kMaxEvalDepth = 1000;

// One level of evaluation nesting, for as long as it lives.
struct DepthGuard {
  int& d;
  explicit DepthGuard(int& depth) : d(depth) { ++d; }
  ~DepthGuard() { --d; }
};

constexpr int kMaxValueDepth = 300;

absl::Status UndefinedError(const Value& v) {
  return absl::InvalidArgumentError(v.undefined_message());
}

Value UndefinedNamed(std::string_view name) {
  return Value::Undefined(Cat("UndefinedError: '", name, "' is undefined"));
}

// Python's floor division and modulo for floats (floatobject.c).
void FloatDivMod(double a, double b, double* div, double* mod) {
  double m = std::fmod(a, b);
  double d = (a - m) / b;
  if (m != 0) {
    if ((b < 0) != (m < 0)) {
      m += b;
      d -= 1.0;
    }
  } else {
    m = std::copysign(0.0, b);
  }
  double floordiv;
  if (d != 0) {
    floordiv = std::floor(d);
    if (d - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, a / b);
  }
  *div = floordiv;
  *mod = m;
}

absl::StatusOr<Value> Repeat(Interpreter& in, const Value& seq, int64_t n) {
  if (n < 0) n = 0;
  // Nothing times a billion is nothing, at once (found by fuzzing).
  if (seq.is_string() && (seq.as_string().empty() || n == 0)) {
    return seq.is_markup() ? Value::Markup("") : Value::String("");
  }
  if (seq.is_sequence() && (seq.as_list().empty() || n == 0)) {
    return Value::MakeList({}, seq.is_tuple());
  }
  if (seq.is_string()) {
    const size_t size = seq.as_string().size();
    if (size != 0 && static_cast<uint64_t>(n) > in.options().limits.max_output_bytes / size) {
      return in.ChargeString(in.options().limits.max_output_bytes + 1);
    }
    JINJA_RETURN_IF_ERROR(in.ChargeString(size * n));
    std::string out;
    out.reserve(size * n);
    for (int64_t i = 0; i < n; ++i) out += seq.as_string();
    return seq.is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
  }
  const size_t size = seq.as_list().size();
  if (size != 0 && static_cast<uint64_t>(n) >
                       static_cast<uint64_t>(in.options().limits.max_loop_iterations) / size) {
    return absl::ResourceExhaustedError(
        "LimitError: a list grew past the limit on loop iterations");
  }
  JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(size) * n));
  Value::List out;
  for (int64_t i = 0; i < n; ++i) {
    out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  }
  return Value::MakeList(std::move(out), seq.is_tuple());
}

absl::StatusOr<Value> IntPow(int64_t base, int64_t exp) {
  if (exp < 0) {
    if (base == 0) {
      return TemplateError("ZeroDivisionError", "0.0 cannot be raised to a negative power");
    }
    return Value::Float(std::pow(static_cast<double>(base), static_cast<double>(exp)));
  }
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1) {
      if (__builtin_mul_overflow(result, base, &result)) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
    }
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) {
      return TemplateError("OverflowError", "integer result does not fit in 64 bits");
    }
  }
  return Value::Int(result);
}

// The Python operand type names in "unsupported operand" messages.
absl::Status Unsupported(std::string_view op, const Value& a, const Value& b) {
  return TemplateError("TypeError", Cat("unsupported operand type(s) for ", op, ": '", a.TypeName(),
                                        "' and '", b.TypeName(), "'"));
}

}  // namespace

absl::Status TemplateError(std::string_view type, std::string_view message) {
  return absl::InvalidArgumentError(Cat(type, ": ", message));
}

Interpreter::Interpreter(const RenderOptions& options) : options_(options) {
  // Work other than loop iterations (evaluating, copying) is bounded too, so
  // that nothing runs unboundedly long inside the limits.
  work_limit_ = std::max<int64_t>(options_.limits.max_loop_iterations, 1000) * 100;
}

Interpreter::~Interpreter() {
  for (auto& ns : namespaces_) ns->attrs.clear();
}

Value Interpreter::NewNamespace() {
  auto object = std::make_shared<Value::Object>();
  object->type_name = "Namespace";
  namespaces_.push_back(object);
  return Value::MakeObject(std::move(object));
}

absl::Status Interpreter::Charge(int64_t units) {
  work_ += units;
  if (work_ > work_limit_) {
    return absl::ResourceExhaustedError(
        Cat("LimitError: the template did more than ", work_limit_,
            " steps of work (100 times the limit on loop iterations)"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ChargeString(size_t n) {
  if (n > options_.limits.max_output_bytes) {
    return absl::ResourceExhaustedError(
        Cat("LimitError: a string or the output grew past the limit of ",
            options_.limits.max_output_bytes, " bytes"));
  }
  return Charge(static_cast<int64_t>(n / 64));
}

absl::Status Interpreter::CheckDepth(const Value& v) {
  if (v.depth() > kMaxValueDepth) {
    return absl::ResourceExhaustedError(
        Cat("LimitError: values nested deeper than ", kMaxValueDepth));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Append(std::string_view text, std::string* out) {
  if (out->size() + text.size() > options_.limits.max_output_bytes) {
    return ChargeString(out->size() + text.size());
  }
  JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(text.size() / 64)));
  out->append(text);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Interpreter::Run(const Body& body, std::shared_ptr<Scope> root) {
  std::string out;
  JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(body, root, &out));
  (void)flow;
  return out;
}

absl::StatusOr<std::string> Interpreter::Str(const Value& v) {
  std::string out;
  JINJA_RETURN_IF_ERROR(AppendStr(v, options_.limits.max_output_bytes, &out));
  JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(out.size() / 64)));
  return out;
}

absl::StatusOr<Value> Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_function()) {
    return TemplateError("TypeError", Cat("'", callee.TypeName(), "' object is not callable"));
  }
  JINJA_RETURN_IF_ERROR(Charge(1));
  return callee.as_function().call(*this, args);
}

absl::StatusOr<Value> Interpreter::GetAttr(const Value& obj, std::string_view name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (std::optional<Value> method = BoundMethod(obj, name)) return *method;
  if (obj.is_dict()) {
    // Lookups scan the dict (insertion order is the point): they count as work.
    JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(obj.as_dict().items.size() / 16)));
    if (const Value* v = obj.as_dict().Find(Value::String(std::string(name)))) return *v;
  } else if (obj.is_object()) {
    if (const Value* v = obj.as_object().Find(name)) return *v;
  }
  return Value::Undefined(
      Cat("UndefinedError: '", obj.ObjectTypeRepr(), "' has no attribute '", name, "'"));
}

absl::StatusOr<Value> Interpreter::GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.is_dict() && !key.is_list() && !key.is_dict()) {
    JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(obj.as_dict().items.size() / 16)));
    if (const Value* v = obj.as_dict().Find(key)) return *v;
  } else if ((obj.is_sequence() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_string()) {
      const std::u32string cps = pystr::Decode(obj.as_string());
      const int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) {
        std::string c = pystr::Encode(std::u32string(1, cps[i]));
        return obj.is_markup() ? Value::Markup(std::move(c)) : Value::String(std::move(c));
      }
    } else {
      const int64_t n = static_cast<int64_t>(obj.as_list().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) return obj.as_list()[i];
    }
  }
  if (key.is_string()) {
    if (std::optional<Value> method = BoundMethod(obj, key.as_string())) return *method;
    if (obj.is_object()) {
      if (const Value* v = obj.as_object().Find(key.as_string())) return *v;
    }
    return Value::Undefined(Cat("UndefinedError: '", obj.ObjectTypeRepr(), "' has no attribute '",
                                key.as_string(), "'"));
  }
  std::string key_repr;
  JINJA_RETURN_IF_ERROR(AppendRepr(key, 4096, &key_repr));
  return Value::Undefined(
      Cat("UndefinedError: ", obj.ObjectTypeRepr(), " has no element ", key_repr));
}

absl::StatusOr<std::vector<Value>> Interpreter::Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return v.as_list();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.as_dict().items.size());
      for (const auto& [k, item] : v.as_dict().items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t cp : pystr::Decode(v.as_string())) {
        chars.push_back(Value::String(pystr::Encode(std::u32string(1, cp))));
      }
      return chars;
    }
    default:
      return TemplateError("TypeError", Cat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> Interpreter::Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(pystr::Length(v.as_string()));
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return static_cast<int64_t>(v.as_list().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.as_dict().items.size());
    default:
      return TemplateError("TypeError", Cat("object of type '", v.TypeName(), "' has no len()"));
  }
}

absl::StatusOr<int> Interpreter::Compare(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) {
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    }
    const double x = a.as_float(), y = b.as_float();
    if (std::isnan(x) || std::isnan(y)) return 2;  // unordered: every comparison false
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
    const auto& x = a.as_list();
    const auto& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      JINJA_RETURN_IF_ERROR(Charge(1));
      if (!PyEquals(x[i], y[i])) return Compare(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return TemplateError("TypeError", Cat("'", op, "' not supported between instances of '",
                                        a.TypeName(), "' and '", b.TypeName(), "'"));
}

absl::StatusOr<bool> Interpreter::Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return TemplateError("TypeError", Cat("'in <string>' requires string as left operand, not ",
                                              item.TypeName()));
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(container.as_list().size())));
      for (const Value& v : container.as_list()) {
        if (PyEquals(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (item.is_list() || item.is_dict()) {
        return TemplateError("TypeError", Cat("unhashable type: '", item.TypeName(), "'"));
      }
      JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(container.as_dict().items.size() / 16)));
      return container.as_dict().Find(item) != nullptr;
    default:
      return TemplateError("TypeError",
                           Cat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<Value> Interpreter::Modulo(const Value& a, const Value& b) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (!a.is_number() || !b.is_number()) {
    if (a.is_string()) {
      return TemplateError("TypeError", "printf-style formatting with % is not supported");
    }
    return Unsupported("%", a, b);
  }
  if (!a.is_float() && !b.is_float()) {
    if (b.as_int() == 0) return TemplateError("ZeroDivisionError", "integer modulo by zero");
    if (b.as_int() == -1) return Value::Int(0);
    int64_t m = a.as_int() % b.as_int();
    if (m != 0 && ((m < 0) != (b.as_int() < 0))) m += b.as_int();
    return Value::Int(m);
  }
  if (b.as_float() == 0) return TemplateError("ZeroDivisionError", "float modulo");
  double div, mod;
  FloatDivMod(a.as_float(), b.as_float(), &div, &mod);
  return Value::Float(mod);
}

absl::StatusOr<Value> Interpreter::EvalBinary(const std::string& op, const Value& a,
                                              const Value& b) {
  if (op == "~") {
    JINJA_ASSIGN_OR_RETURN(std::string left, Str(a));
    JINJA_ASSIGN_OR_RETURN(std::string right, Str(b));
    JINJA_RETURN_IF_ERROR(ChargeString(left.size() + right.size()));
    return Value::String(left + right);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "%") return Modulo(a, b);
  const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  const bool numbers = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      return Value::Int(r);
    }
    if (numbers) return Value::Float(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) {
      JINJA_RETURN_IF_ERROR(ChargeString(a.as_string().size() + b.as_string().size()));
      if (a.is_markup() || b.is_markup()) {  // Markup escapes the plain side
        return Value::Markup((a.is_markup() ? a.as_string() : HtmlEscape(a.as_string())) +
                             (b.is_markup() ? b.as_string() : HtmlEscape(b.as_string())));
      }
      return Value::String(a.as_string() + b.as_string());
    }
    if (a.is_markup() || b.is_markup()) return Unsupported("+", a, b);
    if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
      const size_t n = a.as_list().size() + b.as_list().size();
      if (n > static_cast<size_t>(options_.limits.max_loop_iterations)) {
        return absl::ResourceExhaustedError(
            "LimitError: a list grew past the limit on loop iterations");
      }
      JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(n)));
      Value::List items = a.as_list();
      items.insert(items.end(), b.as_list().begin(), b.as_list().end());
      return Value::MakeList(std::move(items), a.is_tuple());
    }
    if (a.is_string() || a.is_list() || a.is_tuple()) {
      return TemplateError("TypeError", Cat("can only concatenate ", a.TypeName(), " (not \"",
                                            b.TypeName(), "\") to ", a.TypeName()));
    }
    return Unsupported("+", a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      return Value::Int(r);
    }
    if (numbers) return Value::Float(a.as_float() - b.as_float());
    return Unsupported("-", a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      return Value::Int(r);
    }
    if (numbers) return Value::Float(a.as_float() * b.as_float());
    if ((a.is_string() || a.is_sequence()) && (b.is_int() || b.is_bool())) {
      return Repeat(*this, a, b.as_int());
    }
    if ((b.is_string() || b.is_sequence()) && (a.is_int() || a.is_bool())) {
      return Repeat(*this, b, a.as_int());
    }
    if (a.is_string() || a.is_sequence() || b.is_string() || b.is_sequence()) {
      const Value& seq = a.is_string() || a.is_sequence() ? a : b;
      const Value& other = &seq == &a ? b : a;
      return TemplateError(
          "TypeError", Cat("can't multiply sequence by non-int of type '", other.TypeName(), "'"));
    }
    return Unsupported("*", a, b);
  }
  if (op == "/") {
    if (!numbers) return Unsupported("/", a, b);
    if (b.as_float() == 0) {
      return TemplateError("ZeroDivisionError",
                           ints ? "division by zero" : "float division by zero");
    }
    return Value::Float(a.as_float() / b.as_float());
  }
  if (op == "//") {
    if (!numbers) return Unsupported("//", a, b);
    if (ints) {
      const int64_t x = a.as_int(), y = b.as_int();
      if (y == 0) return TemplateError("ZeroDivisionError", "integer division or modulo by zero");
      if (x == std::numeric_limits<int64_t>::min() && y == -1) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      int64_t q = x / y;
      if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
      return Value::Int(q);
    }
    if (b.as_float() == 0)
      return TemplateError("ZeroDivisionError", "float floor division by zero");
    double div, mod;
    FloatDivMod(a.as_float(), b.as_float(), &div, &mod);
    return Value::Float(div);
  }
  if (op == "**") {
    if (!numbers) return Unsupported("** or pow()", a, b);
    if (ints) return IntPow(a.as_int(), b.as_int());
    const double x = a.as_float(), y = b.as_float();
    if (x == 0 && y < 0) {
      return TemplateError("ZeroDivisionError", "0.0 cannot be raised to a negative power");
    }
    if (x < 0 && y != std::floor(y)) {
      return TemplateError("ValueError", "complex results are not supported");
    }
    const double r = std::pow(x, y);
    if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) {
      return TemplateError("OverflowError", "(34, 'Numerical result out of range')");
    }
    return Value::Float(r);
  }
  return TemplateError("TemplateSyntaxError", Cat("unknown operator ", op));
}

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const Expr& e, size_t first,
                                               const std::shared_ptr<Scope>& scope) {
  CallArgs args;
  for (size_t i = first; i < e.children.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i], scope));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [key, expr] : e.kwargs) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*expr, scope));
    args.keyword.emplace_back(key, std::move(v));
  }
  return args;
}

absl::StatusOr<Value> Interpreter::ApplyFilterExpr(const Expr& e, Value input,
                                                   const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
  return ApplyFilter(*this, e.name, input, args);
}

absl::StatusOr<Value> Interpreter::EvalCompare(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value left, Eval(*e.children[0], scope));
  for (size_t i = 0; i < e.ops.size(); ++i) {
    JINJA_ASSIGN_OR_RETURN(Value right, Eval(*e.children[i + 1], scope));
    const std::string& op = e.ops[i];
    bool result;
    if (op == "==" || op == "!=") {
      if ((left.is_sequence() && right.is_sequence()) || (left.is_dict() && right.is_dict())) {
        JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(
            left.is_dict() ? left.as_dict().items.size() : left.as_list().size())));
      }
      result = PyEquals(left, right) == (op == "==");
    } else if (op == "in" || op == "notin") {
      JINJA_ASSIGN_OR_RETURN(result, Contains(right, left));
      if (op == "notin") result = !result;
    } else {
      JINJA_ASSIGN_OR_RETURN(int c, Compare(left, right, op));
      if (c == 2) {
        result = false;
      } else if (op == "<") {
        result = c < 0;
      } else if (op == "<=") {
        result = c <= 0;
      } else if (op == ">") {
        result = c > 0;
      } else {
        result = c >= 0;
      }
    }
    if (!result) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

absl::StatusOr<Value> Interpreter::EvalSequence(const Expr& e,
                                                const std::shared_ptr<Scope>& scope) {
  Value::List items;
  for (const auto& c : e.children) {
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*c, scope));
    items.push_back(std::move(v));
  }
  Value v = Value::MakeList(std::move(items), e.kind == Expr::Kind::kTuple);
  JINJA_RETURN_IF_ERROR(CheckDepth(v));
  return v;
}

absl::StatusOr<Value> Interpreter::EvalDict(const Expr& e, const std::shared_ptr<Scope>& scope) {
  Value::Dict dict;
  for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
    JINJA_ASSIGN_OR_RETURN(Value key, Eval(*e.children[i], scope));
    JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i + 1], scope));
    if (key.is_list() || key.is_dict() || key.is_undefined()) {
      return TemplateError("TypeError", Cat("unhashable type: '", key.TypeName(), "'"));
    }
    bool replaced = false;
    for (auto& [k, old] : dict.items) {
      if (PyEquals(k, key)) {
        old = v;
        replaced = true;
        break;
      }
    }
    if (!replaced) dict.items.emplace_back(std::move(key), std::move(v));
  }
  Value v = Value::MakeDict(std::move(dict));
  JINJA_RETURN_IF_ERROR(CheckDepth(v));
  return v;
}

absl::StatusOr<Value> Interpreter::EvalGetattr(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
  return GetAttr(obj, e.name);
}

absl::StatusOr<Value> Interpreter::EvalGetitem(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
  JINJA_ASSIGN_OR_RETURN(Value key, Eval(*e.children[1], scope));
  return GetItem(obj, key);
}

absl::StatusOr<Value> Interpreter::EvalSlice(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0], scope));
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.children[i + 1]) {
      JINJA_ASSIGN_OR_RETURN(parts[i], Eval(*e.children[i + 1], scope));
    } else {
      parts[i] = Value::None();
    }
  }
  if (obj.is_undefined()) return UndefinedError(obj);
  for (const Value& p : parts) {
    if (!p.is_none() && !p.is_int() && !p.is_bool()) {
      return TemplateError("TypeError",
                           "slice indices must be integers or None or have an __index__ method");
    }
  }
  // Jinja2 slices with Python's own obj[a:b:c], not the sandbox's getitem,
  // except where it folded a constant expression at compile time.
  if (!obj.is_string() && !obj.is_sequence() && e.value.is_bool()) {
    return Value::Undefined(Cat("UndefinedError: ", obj.ObjectTypeRepr(), " has no element slice"));
  }
  if (obj.is_dict()) return TemplateError("TypeError", "unhashable type: 'slice'");
  if (!obj.is_string() && !obj.is_sequence()) {
    return TemplateError("TypeError", Cat("'", obj.TypeName(), "' object is not subscriptable"));
  }
  const int64_t step = parts[2].is_none() ? 1 : parts[2].as_int();
  if (step == 0) return TemplateError("ValueError", "slice step cannot be zero");
  std::u32string cps;
  int64_t n;
  if (obj.is_string()) {
    cps = pystr::Decode(obj.as_string());
    n = static_cast<int64_t>(cps.size());
  } else {
    n = static_cast<int64_t>(obj.as_list().size());
  }
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](const Value& p, int64_t fallback) {
    if (p.is_none()) return fallback;
    int64_t i = p.as_int();
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  const int64_t start = adjust(parts[0], step < 0 ? n - 1 : 0);
  const int64_t stop = adjust(parts[1], step < 0 ? -1 : n);
  std::vector<int64_t> indices;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) indices.push_back(i);
  JINJA_RETURN_IF_ERROR(Charge(static_cast<int64_t>(indices.size())));
  if (obj.is_string()) {
    std::u32string out;
    for (int64_t i : indices) out.push_back(cps[i]);
    return obj.is_markup() ? Value::Markup(pystr::Encode(out)) : Value::String(pystr::Encode(out));
  }
  Value::List out;
  for (int64_t i : indices) out.push_back(obj.as_list()[i]);
  return Value::MakeList(std::move(out), obj.is_tuple());
}

absl::StatusOr<Value> Interpreter::EvalCall(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value callee, Eval(*e.children[0], scope));
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
  return Call(callee, args);
}

absl::StatusOr<Value> Interpreter::EvalFilter(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0], scope));
  return ApplyFilterExpr(e, std::move(input), scope);
}

absl::StatusOr<Value> Interpreter::EvalTest(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value input, Eval(*e.children[0], scope));
  JINJA_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e, 1, scope));
  JINJA_ASSIGN_OR_RETURN(bool result, ApplyTest(*this, e.name, input, args));
  return Value::Bool(result);
}

absl::StatusOr<Value> Interpreter::EvalUnary(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0], scope));
  if (e.name == "not") return Value::Bool(!v.Truthy());
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_number()) {
    return TemplateError("TypeError",
                         Cat("bad operand type for unary ", e.name, ": '", v.TypeName(), "'"));
  }
  if (e.name == "+") return v.is_float() ? v : Value::Int(v.as_int());
  if (v.is_float()) return Value::Float(-v.as_float());
  if (v.as_int() == std::numeric_limits<int64_t>::min()) {
    return TemplateError("OverflowError", "integer result does not fit in 64 bits");
  }
  return Value::Int(-v.as_int());
}

absl::StatusOr<Value> Interpreter::EvalBinary(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
  JINJA_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1], scope));
  return EvalBinary(e.name, a, b);
}

absl::StatusOr<Value> Interpreter::EvalAnd(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
  if (!a.Truthy()) return a;
  return Eval(*e.children[1], scope);
}

absl::StatusOr<Value> Interpreter::EvalOr(const Expr& e, const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0], scope));
  if (a.Truthy()) return a;
  return Eval(*e.children[1], scope);
}

absl::StatusOr<Value> Interpreter::EvalCondExpr(const Expr& e,
                                                const std::shared_ptr<Scope>& scope) {
  JINJA_ASSIGN_OR_RETURN(Value test, Eval(*e.children[0], scope));
  if (test.Truthy()) return Eval(*e.children[1], scope);
  if (e.children[2]) return Eval(*e.children[2], scope);
  return Value::Undefined(Cat("UndefinedError: the inline if-expression on line ", e.line,
                              " evaluated to false and no else section was defined."));
}

absl::Status Interpreter::EnterLevel() {
  if (depth_ > kMaxEvalDepth) {
    return absl::ResourceExhaustedError("LimitError: evaluation nested too deeply");
  }
  return Charge(1);
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& e, const std::shared_ptr<Scope>& scope) {
  const DepthGuard guard(depth_);
  JINJA_RETURN_IF_ERROR(EnterLevel());
  // One small frame per level of nesting: each kind with locals of its own
  // evaluates in a function of its own (an ASan build's frames are large).
  switch (e.kind) {
    case Expr::Kind::kConst:
      return e.value;
    case Expr::Kind::kName:
      for (const Scope* s = scope.get(); s != nullptr; s = s->parent.get()) {
        if (auto it = s->vars.find(e.name); it != s->vars.end()) return it->second;
      }
      return UndefinedNamed(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple:
      return EvalSequence(e, scope);
    case Expr::Kind::kDict:
      return EvalDict(e, scope);
    case Expr::Kind::kGetattr:
      return EvalGetattr(e, scope);
    case Expr::Kind::kGetitem:
      return EvalGetitem(e, scope);
    case Expr::Kind::kSlice:
      return EvalSlice(e, scope);
    case Expr::Kind::kCall:
      return EvalCall(e, scope);
    case Expr::Kind::kFilter:
      return EvalFilter(e, scope);
    case Expr::Kind::kTest:
      return EvalTest(e, scope);
    case Expr::Kind::kUnary:
      return EvalUnary(e, scope);
    case Expr::Kind::kBinary:
      return EvalBinary(e, scope);
    case Expr::Kind::kAnd:
      return EvalAnd(e, scope);
    case Expr::Kind::kOr:
      return EvalOr(e, scope);
    case Expr::Kind::kCompare:
      return EvalCompare(e, scope);
    case Expr::Kind::kCondExpr:
      return EvalCondExpr(e, scope);
  }
  return absl::InternalError("unknown expression kind");
}

absl::Status Interpreter::Assign(const Expr& target, const Value& value, Scope& scope) {
  if (target.kind == Expr::Kind::kName) {
    scope.vars[target.name] = value;
    return absl::OkStatus();
  }
  if (target.kind == Expr::Kind::kGetattr) {
    const std::string& ns_name = target.children[0]->name;
    const Value* ns = nullptr;
    for (const Scope* s = &scope; s != nullptr && ns == nullptr; s = s->parent.get()) {
      if (auto it = s->vars.find(ns_name); it != s->vars.end()) ns = &it->second;
    }
    if (ns == nullptr || !ns->is_object() || ns->as_object().type_name != "Namespace") {
      return TemplateError("TemplateRuntimeError",
                           "cannot assign attribute on non-namespace object");
    }
    if (value.depth() + 1 > kMaxValueDepth) return CheckDepth(Value::MakeList({value}));
    ns->as_object().Set(target.name, value);
    return absl::OkStatus();
  }
  // A tuple of targets: unpack.
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
  const size_t want = target.children.size();
  if (items.size() > want) {
    return TemplateError("ValueError", Cat("too many values to unpack (expected ", want, ")"));
  }
  if (items.size() < want) {
    return TemplateError("ValueError", Cat("not enough values to unpack (expected ", want, ", got ",
                                           items.size(), ")"));
  }
  for (size_t i = 0; i < want; ++i) {
    JINJA_RETURN_IF_ERROR(Assign(*target.children[i], items[i], scope));
  }
  return absl::OkStatus();
}

Value Interpreter::MakeMacro(const Stmt& s, const std::shared_ptr<Scope>& scope) {
  // The macro sees the scope it was defined in (a closure), as Jinja2's do.
  std::weak_ptr<Scope> weak = scope;
  const Stmt* macro = &s;
  return Value::MakeFunction(
      s.text, [macro, weak](Interpreter& in, CallArgs& args) -> absl::StatusOr<Value> {
        std::shared_ptr<Scope> defined = weak.lock();
        if (!defined) return absl::InternalError("a macro outlived its scope");
        const size_t n = macro->params.size();
        if (args.positional.size() > n) {
          return TemplateError("TypeError", Cat("macro '", macro->text, "' takes not more than ", n,
                                                " argument(s)"));
        }
        auto local = std::make_shared<Scope>();
        local->parent = defined;
        std::vector<bool> given(n, false);
        for (size_t i = 0; i < args.positional.size(); ++i) {
          local->vars[macro->params[i]] = args.positional[i];
          given[i] = true;
        }
        for (auto& [key, v] : args.keyword) {
          auto it = std::find(macro->params.begin(), macro->params.end(), key);
          if (it == macro->params.end()) {
            return TemplateError("TypeError", Cat("macro '", macro->text,
                                                  "' takes no keyword argument '", key, "'"));
          }
          const size_t i = it - macro->params.begin();
          if (given[i]) {
            return TemplateError(
                "TypeError",
                Cat("macro '", macro->text, "' got multiple values for argument '", key, "'"));
          }
          local->vars[key] = v;
          given[i] = true;
        }
        for (size_t i = 0; i < n; ++i) {
          if (given[i]) continue;
          if (macro->defaults[i]) {
            JINJA_ASSIGN_OR_RETURN(local->vars[macro->params[i]],
                                   in.Eval(*macro->defaults[i], local));
          } else {
            local->vars[macro->params[i]] = Value::Undefined(
                Cat("UndefinedError: parameter '", macro->params[i], "' was not provided"));
          }
        }
        if (in.macro_depth_ >= in.options_.limits.max_recursion_depth) {
          return absl::ResourceExhaustedError(Cat("LimitError: macro calls nested deeper than ",
                                                  in.options_.limits.max_recursion_depth,
                                                  " (the recursion limit)"));
        }
        ++in.macro_depth_;
        std::string out;
        auto flow = in.Exec(macro->bodies[0], local, &out);
        --in.macro_depth_;
        if (!flow.ok()) return flow.status();
        return Value::String(std::move(out));
      });
}

absl::StatusOr<Interpreter::Flow> Interpreter::Exec(const Body& body,
                                                    const std::shared_ptr<Scope>& scope,
                                                    std::string* out) {
  for (const StmtPtr& s : body) {
    JINJA_ASSIGN_OR_RETURN(Flow flow, ExecStmt(*s, scope, out));
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecFor(const Stmt& s,
                                                       const std::shared_ptr<Scope>& scope,
                                                       std::string* out) {
  JINJA_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr, scope));
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
  if (s.filter) {
    std::vector<Value> kept;
    for (Value& item : items) {
      JINJA_RETURN_IF_ERROR(Charge(1));
      auto local = std::make_shared<Scope>();
      local->parent = scope;
      JINJA_RETURN_IF_ERROR(Assign(*s.target, item, *local));
      JINJA_ASSIGN_OR_RETURN(Value keep, Eval(*s.filter, local));
      if (keep.Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  bool completed_one = false;
  for (int64_t i = 0; i < n; ++i) {
    if (++iterations_ > options_.limits.max_loop_iterations) {
      return absl::ResourceExhaustedError(
          Cat("LimitError: more than ", options_.limits.max_loop_iterations, " loop iterations"));
    }
    auto local = std::make_shared<Scope>();
    local->parent = scope;
    JINJA_RETURN_IF_ERROR(Assign(*s.target, items[i], *local));
    auto loop = std::make_shared<Value::Object>();
    loop->type_name = "LoopContext";
    loop->attrs = {
        {"index0", Value::Int(i)},
        {"index", Value::Int(i + 1)},
        {"revindex0", Value::Int(n - i - 1)},
        {"revindex", Value::Int(n - i)},
        {"first", Value::Bool(i == 0)},
        {"last", Value::Bool(i == n - 1)},
        {"length", Value::Int(n)},
        {"depth", Value::Int(1)},
        {"depth0", Value::Int(0)},
        {"previtem",
         i > 0 ? items[i - 1] : Value::Undefined("UndefinedError: there is no previous item")},
        {"nextitem",
         i + 1 < n ? items[i + 1] : Value::Undefined("UndefinedError: there is no next item")},
        {"cycle", Value::MakeFunction("cycle",
                                      [i](Interpreter&, CallArgs& args) -> absl::StatusOr<Value> {
                                        if (args.positional.empty()) {
                                          return TemplateError("TypeError",
                                                               "no items for cycling given");
                                        }
                                        return args.positional[i % args.positional.size()];
                                      })},
    };
    local->vars["loop"] = Value::MakeObject(std::move(loop));
    JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.bodies[0], local, out));
    if (flow == Flow::kNormal) completed_one = true;
    if (flow == Flow::kBreak) break;
  }
  // Jinja2 runs `else` unless an iteration reached the end of the body: one
  // that ended in break or continue does not count.
  if (!completed_one && !s.else_body.empty()) {
    auto local = std::make_shared<Scope>();
    local->parent = scope;
    JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.else_body, local, out));
    (void)flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<Interpreter::Flow> Interpreter::ExecStmt(const Stmt& s,
                                                        const std::shared_ptr<Scope>& scope,
                                                        std::string* out) {
  const DepthGuard guard(depth_);
  JINJA_RETURN_IF_ERROR(EnterLevel());
  switch (s.kind) {
    case Stmt::Kind::kText:
      JINJA_RETURN_IF_ERROR(Append(s.text, out));
      return Flow::kNormal;
    case Stmt::Kind::kPrint: {
      JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
      if (v.is_string()) {
        JINJA_RETURN_IF_ERROR(Append(v.as_string(), out));
      } else {
        JINJA_ASSIGN_OR_RETURN(std::string text, Str(v));
        JINJA_RETURN_IF_ERROR(Append(text, out));
      }
      return Flow::kNormal;
    }
    case Stmt::Kind::kIf:
      for (size_t i = 0; i < s.conditions.size(); ++i) {
        JINJA_ASSIGN_OR_RETURN(Value test, Eval(*s.conditions[i], scope));
        if (test.Truthy()) return Exec(s.bodies[i], scope, out);
      }
      return Exec(s.else_body, scope, out);
    case Stmt::Kind::kFor:
      return ExecFor(s, scope, out);
    case Stmt::Kind::kSet: {
      JINJA_ASSIGN_OR_RETURN(Value v, Eval(*s.expr, scope));
      JINJA_RETURN_IF_ERROR(Assign(*s.target, v, *scope));
      return Flow::kNormal;
    }
    case Stmt::Kind::kSetBlock: {
      // The body is a frame of its own (what it assigns stays inside).
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      std::string captured;
      JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.bodies[0], inner, &captured));
      (void)flow;
      Value v = Value::String(std::move(captured));
      if (s.filter) {
        // The chain's innermost input is the captured text.
        std::vector<const Expr*> chain;
        for (const Expr* f = s.filter.get(); f != nullptr; f = f->children[0].get()) {
          chain.push_back(f);
        }
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          JINJA_ASSIGN_OR_RETURN(v, ApplyFilterExpr(**it, std::move(v), scope));
        }
      }
      JINJA_RETURN_IF_ERROR(Assign(*s.target, v, *scope));
      return Flow::kNormal;
    }
    case Stmt::Kind::kMacro:
      scope->vars[s.text] = MakeMacro(s, scope);
      return Flow::kNormal;
    case Stmt::Kind::kFilterBlock: {
      auto inner = std::make_shared<Scope>();
      inner->parent = scope;
      std::string captured;
      JINJA_ASSIGN_OR_RETURN(Flow flow, Exec(s.bodies[0], inner, &captured));
      Value v = Value::String(std::move(captured));
      std::vector<const Expr*> chain;
      for (const Expr* f = s.expr.get(); f != nullptr; f = f->children[0].get()) {
        chain.push_back(f);
      }
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        JINJA_ASSIGN_OR_RETURN(v, ApplyFilterExpr(**it, std::move(v), scope));
      }
      JINJA_ASSIGN_OR_RETURN(std::string text, Str(v));
      JINJA_RETURN_IF_ERROR(Append(text, out));
      return flow;
    }
    case Stmt::Kind::kBreak:
      return Flow::kBreak;
    case Stmt::Kind::kContinue:
      return Flow::kContinue;
  }
  return absl::InternalError("unknown statement kind");
}

}  // namespace jinja
