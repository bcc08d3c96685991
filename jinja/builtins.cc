// Jinja2 3.1's filters and tests (jinja2/filters.py, tests.py), the globals
// transformers adds, and the str/dict/list methods templates call.
#include "jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "jinja/interpreter.h"
#include "jinja/pystr.h"
#include "jinja/status_macros.h"

namespace jinja {
namespace {

using Args = std::vector<std::optional<Value>>;

// Binds positional, then keyword arguments to the parameter names.
absl::StatusOr<Args> Bind(std::string_view fn, const CallArgs& args,
                          std::initializer_list<std::string_view> names) {
  const std::vector<std::string_view> params(names);
  if (args.positional.size() > params.size()) {
    return TemplateError("TypeError",
                         Cat(fn, "() takes ", params.size(), " positional arguments but ",
                             args.positional.size(), " were given"));
  }
  Args out(params.size());
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i];
  for (const auto& [key, v] : args.keyword) {
    auto it = std::find(params.begin(), params.end(), key);
    if (it == params.end()) {
      return TemplateError("TypeError",
                           Cat(fn, "() got an unexpected keyword argument '", key, "'"));
    }
    if (out[it - params.begin()]) {
      return TemplateError("TypeError", Cat(fn, "() got multiple values for argument '", key, "'"));
    }
    out[it - params.begin()] = v;
  }
  return out;
}

bool IsTrue(const std::optional<Value>& v) { return v && v->Truthy(); }

absl::StatusOr<std::string> StrArg(Interpreter& in, const std::optional<Value>& v,
                                   std::string fallback) {
  if (!v) return fallback;
  return in.Str(*v);
}

absl::StatusOr<int64_t> IntArg(const std::optional<Value>& v, int64_t fallback,
                               std::string_view what) {
  if (!v || v->is_none()) return fallback;
  if (!v->is_int() && !v->is_bool()) {
    return TemplateError("TypeError", Cat(what, " must be an integer, not '", v->TypeName(), "'"));
  }
  return v->as_int();
}

Value Str(std::string s) { return Value::String(std::move(s)); }
// A string result that stays Markup when the input was (markupsafe's methods).
Value SameKind(const Value& input, std::string s) {
  return input.is_markup() ? Value::Markup(std::move(s)) : Value::String(std::move(s));
}

// Python's int(str): whitespace, a sign, digits with single underscores.
std::optional<int64_t> ParsePyInt(std::string_view text) {
  const std::string s = pystr::Strip(text, std::nullopt, true, true);
  size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  if (i >= s.size() || !absl::ascii_isdigit(s[i])) return std::nullopt;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] == '_' && i + 1 < s.size() && absl::ascii_isdigit(s[i + 1]) && i > 0 &&
        absl::ascii_isdigit(s[i - 1])) {
      continue;
    }
    if (!absl::ascii_isdigit(s[i])) return std::nullopt;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v)) {
      return std::nullopt;
    }
  }
  return negative ? -v : v;
}

// Python's float(str).
std::optional<double> ParsePyFloat(std::string_view text) {
  std::string s = pystr::Strip(text, std::nullopt, true, true);
  std::string lower = absl::AsciiStrToLower(s);
  std::string_view body = lower;
  double sign = 1;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    sign = body[0] == '-' ? -1 : 1;
    body.remove_prefix(1);
  }
  if (body == "inf" || body == "infinity") return sign * INFINITY;
  if (body == "nan") return NAN;
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (i == 0 || i + 1 >= s.size() || !absl::ascii_isdigit(s[i - 1]) ||
          !absl::ascii_isdigit(s[i + 1])) {
        return std::nullopt;
      }
      continue;
    }
    if (!absl::ascii_isdigit(c) && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-') {
      return std::nullopt;
    }
    clean.push_back(c);
  }
  if (clean.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return v;
}

// Jinja2's make_attrgetter: "a.b.0" looked up with getitem, part by part.
absl::StatusOr<Value> GetPath(Interpreter& in, const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return in.GetItem(item, attribute);
  Value v = item;
  std::string_view path = attribute.as_string();
  while (true) {
    const size_t dot = path.find('.');
    const std::string_view part = path.substr(0, dot);
    Value key = Str(std::string(part));
    if (!part.empty() && std::all_of(part.begin(), part.end(), absl::ascii_isdigit)) {
      if (auto i = ParsePyInt(part)) key = Value::Int(*i);
    }
    JINJA_ASSIGN_OR_RETURN(v, in.GetItem(v, key));
    if (dot == std::string_view::npos) return v;
    path.remove_prefix(dot + 1);
  }
}

// Jinja2's ignore_case: strings compared lowercased unless case_sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Str(pystr::Lower(v.as_string()));
  return v;
}

// A stable sort of values by key with Python's `<`.
absl::Status SortValues(Interpreter& in, std::vector<std::pair<Value, Value>>* keyed,
                        bool reverse) {
  absl::Status error;
  JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(keyed->size()) * 4));
  std::stable_sort(keyed->begin(), keyed->end(), [&](const auto& a, const auto& b) {
    if (!error.ok()) return false;
    auto c = reverse ? in.Compare(b.first, a.first, "<") : in.Compare(a.first, b.first, "<");
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return *c == -1;
  });
  return error;
}

absl::StatusOr<Value> DoTojson(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(
      Args a, Bind("tojson", call, {"ensure_ascii", "indent", "separators", "sort_keys"}));
  JsonOptions options;
  options.ensure_ascii = IsTrue(a[0]);
  options.sort_keys = IsTrue(a[3]);
  if (a[1] && !a[1]->is_none()) {
    options.has_indent = true;
    if (a[1]->is_string()) {
      options.indent = a[1]->as_string();
    } else if (a[1]->is_int() || a[1]->is_bool()) {
      const int64_t n = a[1]->as_int();
      if (n > 1024) return TemplateError("ValueError", "indent too large");
      for (int64_t i = 0; i < n; ++i) options.indent.push_back(' ');
    } else {
      return TemplateError("TypeError", "indent must be an int or a str");
    }
    options.item_separator.resize(1);  // ","; an assignment trips GCC 12's -Wrestrict
    options.item_separator[0] = ',';
  }
  if (a[2] && !a[2]->is_none()) {
    if (!a[2]->is_sequence() || a[2]->as_list().size() != 2 || !a[2]->as_list()[0].is_string() ||
        !a[2]->as_list()[1].is_string()) {
      return TemplateError("ValueError", "separators must be a pair of strings");
    }
    options.item_separator = a[2]->as_list()[0].as_string();
    options.key_separator = a[2]->as_list()[1].as_string();
  }
  std::string out;
  JINJA_RETURN_IF_ERROR(AppendJson(input, options, in.options().limits.max_output_bytes, &out));
  JINJA_RETURN_IF_ERROR(in.ChargeString(out.size()));
  return Str(std::move(out));
}

// Jinja2's indent filter (3.1: width, first, blank).
absl::StatusOr<Value> DoIndent(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("indent", call, {"width", "first", "blank"}));
  std::string indention;
  if (a[0] && a[0]->is_string()) {
    indention = a[0]->as_string();
  } else {
    JINJA_ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], 4, "width"));
    if (width > 1024) return TemplateError("ValueError", "indent width too large");
    for (int64_t i = 0; i < width; ++i) indention.push_back(' ');
  }
  // Jinja2 appends "\n" to the value itself: only a string will do.
  if (input.is_undefined()) return absl::InvalidArgumentError(input.undefined_message());
  if (!input.is_string()) {
    return TemplateError(
        "TypeError", Cat("unsupported operand type(s) for +=: '", input.TypeName(), "' and 'str'"));
  }
  std::string s = input.as_string() + "\n";
  const std::vector<std::string> lines = pystr::SplitLines(s);
  std::string rv;
  if (IsTrue(a[2])) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) CatTo(&rv, "\n", indention);
      rv += lines[i];
      JINJA_RETURN_IF_ERROR(in.ChargeString(rv.size()));
    }
  } else if (!lines.empty()) {
    rv = lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += indention;
      rv += lines[i];
      JINJA_RETURN_IF_ERROR(in.ChargeString(rv.size()));
    }
  }
  if (IsTrue(a[1])) rv = indention + rv;
  JINJA_RETURN_IF_ERROR(in.ChargeString(rv.size()));
  return SameKind(input, std::move(rv));
}

// Jinja2's title filter: words begin after runs of -, whitespace, (, {, [, <.
std::string JinjaTitle(std::string_view s) {
  const std::u32string cps = pystr::Decode(s);
  auto separator = [](char32_t c) {
    return c == U'-' || c == U'(' || c == U'{' || c == U'[' || c == U'<' || pystr::IsSpace(c);
  };
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    const bool sep = separator(cps[i]);
    size_t j = i;
    while (j < cps.size() && separator(cps[j]) == sep) ++j;
    const std::string piece = pystr::Encode(std::u32string_view(cps).substr(i, j - i));
    if (sep) {
      out += piece;
    } else {
      out += pystr::Upper(pystr::Encode(std::u32string(1, cps[i])));
      out += pystr::Lower(pystr::Encode(std::u32string_view(cps).substr(i + 1, j - i - 1)));
    }
    i = j;
  }
  return out;
}

// select/reject/selectattr/rejectattr.
absl::StatusOr<Value> Select(Interpreter& in, const Value& input, CallArgs& call, bool by_attr,
                             bool want) {
  size_t next = 0;
  std::optional<Value> attribute;
  if (by_attr) {
    if (call.positional.empty()) {
      return TemplateError("TypeError", "selectattr/rejectattr need an attribute");
    }
    attribute = call.positional[next++];
  }
  std::optional<std::string> test;
  if (next < call.positional.size()) {
    if (!call.positional[next].is_string()) {
      return TemplateError("TypeError", "the test name must be a string");
    }
    test = call.positional[next++].as_string();
    if (!IsKnownTest(*test)) {
      return TemplateError("TemplateRuntimeError", Cat("No test named '", *test, "'."));
    }
  }
  CallArgs test_args;
  test_args.positional.assign(call.positional.begin() + next, call.positional.end());
  test_args.keyword = call.keyword;
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
  Value::List out;
  for (const Value& item : items) {
    JINJA_RETURN_IF_ERROR(in.Charge(1));
    Value subject = item;
    if (attribute) {
      JINJA_ASSIGN_OR_RETURN(subject, GetPath(in, item, *attribute));
    }
    bool ok;
    if (test) {
      CallArgs args = test_args;
      JINJA_ASSIGN_OR_RETURN(ok, ApplyTest(in, *test, subject, args));
    } else {
      ok = subject.Truthy();
    }
    if (ok == want) out.push_back(item);
  }
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> DoMap(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
  Value::List out;
  if (call.positional.empty()) {
    std::optional<Value> attribute, fallback;
    for (const auto& [key, v] : call.keyword) {
      if (key == "attribute") {
        attribute = v;
      } else if (key == "default") {
        fallback = v;
      } else {
        return TemplateError("FilterArgumentError", Cat("Unexpected keyword argument '", key, "'"));
      }
    }
    if (!attribute) return TemplateError("FilterArgumentError", "map requires a filter argument");
    for (const Value& item : items) {
      JINJA_RETURN_IF_ERROR(in.Charge(1));
      JINJA_ASSIGN_OR_RETURN(Value v, GetPath(in, item, *attribute));
      out.push_back(v.is_undefined() && fallback ? *fallback : v);
    }
    return Value::MakeList(std::move(out));
  }
  if (!call.positional[0].is_string()) {
    return TemplateError("TypeError", "the filter name must be a string");
  }
  const std::string name = call.positional[0].as_string();
  if (!IsKnownFilter(name)) {
    return TemplateError("TemplateRuntimeError", Cat("No filter named '", name, "'."));
  }
  for (const Value& item : items) {
    JINJA_RETURN_IF_ERROR(in.Charge(1));
    CallArgs args;
    args.positional.assign(call.positional.begin() + 1, call.positional.end());
    args.keyword = call.keyword;
    JINJA_ASSIGN_OR_RETURN(Value v, ApplyFilter(in, name, item, args));
    out.push_back(std::move(v));
  }
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> DoSort(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("sort", call, {"reverse", "case_sensitive", "attribute"}));
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    Value key = item;
    if (a[2] && !a[2]->is_none()) {
      JINJA_ASSIGN_OR_RETURN(key, GetPath(in, item, *a[2]));
    }
    keyed.emplace_back(SortKey(key, IsTrue(a[1])), std::move(item));
  }
  JINJA_RETURN_IF_ERROR(SortValues(in, &keyed, IsTrue(a[0])));
  Value::List out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> DoDictsort(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("dictsort", call, {"case_sensitive", "by", "reverse"}));
  if (!input.is_dict()) {
    return TemplateError("AttributeError",
                         Cat("'", input.TypeName(), "' object has no attribute 'items'"));
  }
  JINJA_ASSIGN_OR_RETURN(std::string by, StrArg(in, a[1], "key"));
  if (by != "key" && by != "value") {
    return TemplateError("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  }
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& [k, v] : input.as_dict().items) {
    keyed.emplace_back(SortKey(by == "key" ? k : v, IsTrue(a[0])),
                       Value::MakeList({k, v}, /*tuple=*/true));
  }
  JINJA_RETURN_IF_ERROR(SortValues(in, &keyed, IsTrue(a[2])));
  Value::List out;
  for (auto& [k, v] : keyed) out.push_back(std::move(v));
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> DoUnique(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("unique", call, {"case_sensitive", "attribute"}));
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
  Value::List out;
  std::vector<Value> seen;
  for (const Value& item : items) {
    Value key = item;
    if (a[1] && !a[1]->is_none()) {
      JINJA_ASSIGN_OR_RETURN(key, GetPath(in, item, *a[1]));
    }
    key = SortKey(key, IsTrue(a[0]));
    if (key.is_list() || key.is_dict()) {
      return TemplateError("TypeError", Cat("unhashable type: '", key.TypeName(), "'"));
    }
    JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(seen.size()) + 1));
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return PyEquals(s, key); })) {
      continue;
    }
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> MinMax(Interpreter& in, const Value& input, CallArgs& call, bool max) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind(max ? "max" : "min", call, {"case_sensitive", "attribute"}));
  JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
  std::optional<Value> best, best_key;
  for (const Value& item : items) {
    Value key = item;
    if (a[1] && !a[1]->is_none()) {
      JINJA_ASSIGN_OR_RETURN(key, GetPath(in, item, *a[1]));
    }
    key = SortKey(key, IsTrue(a[0]));
    if (best) {
      JINJA_ASSIGN_OR_RETURN(int c, in.Compare(key, *best_key, max ? ">" : "<"));
      if (!(max ? c == 1 : c == -1)) continue;
    }
    best = item;
    best_key = key;
  }
  if (!best) {
    return Value::Undefined(Cat("UndefinedError: No aggregated item, sequence was empty."));
  }
  return *best;
}

absl::StatusOr<Value> DoInt(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("int", call, {"default", "base"}));
  const Value fallback = a[0] ? *a[0] : Value::Int(0);
  if (input.is_string()) {
    JINJA_ASSIGN_OR_RETURN(int64_t base, IntArg(a[1], 10, "base"));
    if (base == 10) {
      if (auto v = ParsePyInt(input.as_string())) return Value::Int(*v);
    } else if (base >= 2 && base <= 36) {
      std::string s = pystr::Strip(input.as_string(), std::nullopt, true, true);
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(s.c_str(), &end, static_cast<int>(base));
      if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value::Int(v);
    }
    if (auto f = ParsePyFloat(input.as_string()); f && std::isfinite(*f)) {
      if (std::fabs(*f) >= 9.2e18) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      return Value::Int(static_cast<int64_t>(*f));
    }
    return fallback;
  }
  if (input.is_int() || input.is_bool()) return Value::Int(input.as_int());
  if (input.is_float()) {
    const double f = input.as_float();
    if (!std::isfinite(f)) return fallback;
    if (std::fabs(f) >= 9.2e18) {
      return TemplateError("OverflowError", "integer result does not fit in 64 bits");
    }
    return Value::Int(static_cast<int64_t>(f));
  }
  if (input.is_undefined()) {
    return absl::InvalidArgumentError(input.undefined_message());
  }
  return fallback;
}

absl::StatusOr<Value> DoFloat(Interpreter& in, const Value& input, CallArgs& call) {
  JINJA_ASSIGN_OR_RETURN(Args a, Bind("float", call, {"default"}));
  const Value fallback = a[0] ? *a[0] : Value::Float(0.0);
  if (input.is_number()) return Value::Float(input.as_float());
  if (input.is_string()) {
    if (auto f = ParsePyFloat(input.as_string())) return Value::Float(*f);
    return fallback;
  }
  if (input.is_undefined()) return absl::InvalidArgumentError(input.undefined_message());
  return fallback;
}

absl::StatusOr<Value> DoFilter(Interpreter& in, std::string_view name, const Value& input,
                               CallArgs& call) {
  if (name == "tojson") return DoTojson(in, input, call);
  if (name == "length" || name == "count") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    JINJA_ASSIGN_OR_RETURN(int64_t n, in.Length(input));
    return Value::Int(n);
  }
  if (name == "string" || name == "safe") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    if (input.is_string() && (name == "string" || input.is_markup())) return input;
    JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(input));
    return name == "safe" ? Value::Markup(std::move(s)) : Str(std::move(s));
  }
  if (name == "trim") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("trim", call, {"chars"}));
    JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(input));
    std::optional<std::string> chars;
    if (a[0] && !a[0]->is_none()) {
      JINJA_ASSIGN_OR_RETURN(chars, in.Str(*a[0]));
    }
    return SameKind(input, pystr::Strip(s, chars, true, true));
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(input));
    if (name == "upper") return SameKind(input, pystr::Upper(s));
    if (name == "lower") return SameKind(input, pystr::Lower(s));
    if (name == "capitalize") return SameKind(input, pystr::Capitalize(s));
    return Str(JinjaTitle(s));
  }
  if (name == "replace") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("replace", call, {"old", "new", "count"}));
    if (!a[0] || !a[1]) return TemplateError("TypeError", "replace needs old and new");
    JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(input));
    JINJA_ASSIGN_OR_RETURN(std::string from, in.Str(*a[0]));
    JINJA_ASSIGN_OR_RETURN(std::string to, in.Str(*a[1]));
    JINJA_ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], -1, "count"));
    const size_t estimate = s.size() + (s.size() + 1) * to.size();
    if (estimate > in.options().limits.max_output_bytes) {
      const size_t hits = from.empty() ? pystr::Length(s) + 1 : [&] {
        size_t n = 0;
        for (size_t at = s.find(from); at != std::string::npos;
             at = s.find(from, at + from.size())) {
          ++n;
        }
        return n;
      }();
      const size_t used = count < 0 ? hits : std::min<size_t>(hits, count);
      JINJA_RETURN_IF_ERROR(in.ChargeString(s.size() + used * to.size()));
    }
    std::string r = pystr::Replace(s, from, to, count);
    JINJA_RETURN_IF_ERROR(in.ChargeString(r.size()));
    return Str(std::move(r));
  }
  if (name == "indent") return DoIndent(in, input, call);
  if (name == "join") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("join", call, {"d", "attribute"}));
    JINJA_ASSIGN_OR_RETURN(std::string sep, StrArg(in, a[0], ""));
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (a[1] && !a[1]->is_none()) {
        JINJA_ASSIGN_OR_RETURN(item, GetPath(in, item, *a[1]));
      }
      if (i > 0) out += sep;
      JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(item));
      out += s;
      JINJA_RETURN_IF_ERROR(in.ChargeString(out.size()));
    }
    return Str(std::move(out));
  }
  if (name == "list") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
    return Value::MakeList(std::move(items));
  }
  if (name == "first" || name == "last") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
    if (items.empty()) {
      return Value::Undefined(Cat("UndefinedError: No ", name, " item, sequence was empty."));
    }
    return name == "first" ? items.front() : items.back();
  }
  if (name == "items") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    if (input.is_undefined()) return Value::MakeList({});
    if (!input.is_dict()) {
      return TemplateError("TypeError", "Can only get item pairs from a mapping.");
    }
    Value::List out;
    for (const auto& [k, v] : input.as_dict().items) out.push_back(Value::MakeList({k, v}, true));
    return Value::MakeList(std::move(out));
  }
  if (name == "map") return DoMap(in, input, call);
  if (name == "select") return Select(in, input, call, false, true);
  if (name == "reject") return Select(in, input, call, false, false);
  if (name == "selectattr") return Select(in, input, call, true, true);
  if (name == "rejectattr") return Select(in, input, call, true, false);
  if (name == "default" || name == "d") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("default", call, {"default_value", "boolean"}));
    if (input.is_undefined() || (IsTrue(a[1]) && !input.Truthy())) {
      return a[0] ? *a[0] : Str("");
    }
    return input;
  }
  if (name == "int") return DoInt(in, input, call);
  if (name == "float") return DoFloat(in, input, call);
  if (name == "abs") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    if (input.is_float()) return Value::Float(std::fabs(input.as_float()));
    if (input.is_int() || input.is_bool()) {
      if (input.as_int() == INT64_MIN) {
        return TemplateError("OverflowError", "integer result does not fit in 64 bits");
      }
      return Value::Int(std::abs(input.as_int()));
    }
    if (input.is_undefined()) return absl::InvalidArgumentError(input.undefined_message());
    return TemplateError("TypeError", Cat("bad operand type for abs(): '", input.TypeName(), "'"));
  }
  if (name == "unique") return DoUnique(in, input, call);
  if (name == "sort") return DoSort(in, input, call);
  if (name == "dictsort") return DoDictsort(in, input, call);
  if (name == "reverse") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    if (input.is_string()) {
      std::u32string cps = pystr::Decode(input.as_string());
      std::reverse(cps.begin(), cps.end());
      return Str(pystr::Encode(cps));
    }
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (name == "min") return MinMax(in, input, call, false);
  if (name == "max") return MinMax(in, input, call, true);
  if (name == "sum") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("sum", call, {"attribute", "start"}));
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(input));
    Value total = a[1] ? *a[1] : Value::Int(0);
    for (const Value& item : items) {
      Value v = item;
      if (a[0] && !a[0]->is_none()) {
        JINJA_ASSIGN_OR_RETURN(v, GetPath(in, item, *a[0]));
      }
      if (!total.is_number() || !v.is_number()) {
        return TemplateError("TypeError", Cat("unsupported operand type(s) for +: '",
                                              total.TypeName(), "' and '", v.TypeName(), "'"));
      }
      if (total.is_float() || v.is_float()) {
        total = Value::Float(total.as_float() + v.as_float());
      } else {
        int64_t r;
        if (__builtin_add_overflow(total.as_int(), v.as_int(), &r)) {
          return TemplateError("OverflowError", "integer result does not fit in 64 bits");
        }
        total = Value::Int(r);
      }
    }
    return total;
  }
  if (name == "attr") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("attr", call, {"name"}));
    if (!a[0] || !a[0]->is_string()) return TemplateError("TypeError", "attr needs a name");
    return in.GetAttr(input, a[0]->as_string());
  }
  return TemplateError("TemplateRuntimeError",
                       Cat("filter '", name, "' is not supported by shift's Jinja"));
}

absl::StatusOr<bool> DoTest(Interpreter& in, std::string_view name, const Value& v,
                            CallArgs& call) {
  auto no_args = [&]() { return Bind(name, call, {}).status(); };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable")
    return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
  if (name == "sequence")
    return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.is_function();
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    JINJA_RETURN_IF_ERROR(no_args());
    JINJA_ASSIGN_OR_RETURN(std::string s, in.Str(v));
    bool cased = false;
    for (char32_t cp : pystr::Decode(s)) {
      // str.islower/isupper: every cased character (titlecase ǅ too) agrees.
      if (pystr::IsCased(cp) && !(name == "lower" ? pystr::IsLower(cp) : pystr::IsUpper(cp))) {
        return false;
      }
      cased = cased || pystr::IsCased(cp);
    }
    return cased;
  }
  if (name == "odd" || name == "even") {
    JINJA_RETURN_IF_ERROR(no_args());
    JINJA_ASSIGN_OR_RETURN(Value m, in.Modulo(v, Value::Int(2)));
    return PyEquals(m, Value::Int(name == "odd" ? 1 : 0));
  }
  if (name == "filter") return v.is_string() && IsKnownFilter(v.as_string());
  if (name == "test") return v.is_string() && IsKnownTest(v.as_string());
  JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"other"}));
  if (!a[0]) {
    return TemplateError("TypeError",
                         Cat("test_", name, "() missing 1 required positional argument"));
  }
  const Value& other = *a[0];
  if (name == "divisibleby") {
    JINJA_ASSIGN_OR_RETURN(Value m, in.Modulo(v, other));
    return PyEquals(m, Value::Int(0));
  }
  if (name == "in") return in.Contains(other, v);
  if (name == "sameas") {
    if (v.is_none() || v.is_bool() || v.is_undefined()) {
      return v.kind() == other.kind() &&
             (v.is_none() || v.is_undefined() || v.as_bool() == other.as_bool());
    }
    if (v.is_int() && other.is_int()) {
      return v.as_int() == other.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    }
    return v.SameStorage(other);
  }
  if (name == "eq" || name == "equalto" || name == "==") return PyEquals(v, other);
  if (name == "ne" || name == "!=") return !PyEquals(v, other);
  JINJA_ASSIGN_OR_RETURN(int c, in.Compare(v, other, "<"));
  if (c == 2) return false;
  if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
  if (name == "le" || name == "<=") return c <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
  if (name == "ge" || name == ">=") return c >= 0;
  return TemplateError("TemplateRuntimeError", Cat("No test named '", name, "'."));
}

// ---- methods ----

absl::StatusOr<Value> StrMethod(Interpreter& in, const Value& self_value, const std::string& name,
                                CallArgs& call) {
  const std::string& self = self_value.as_string();
  // Markup's methods escape their string arguments and return Markup.
  const bool markup = self_value.is_markup();
  auto arg = [&](const std::string& s) { return markup ? HtmlEscape(s) : s; };
  auto result = [&](std::string s) { return SameKind(self_value, std::move(s)); };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"chars"}));
    std::optional<std::string> chars;
    if (a[0] && !a[0]->is_none()) {
      if (!a[0]->is_string()) {
        return TemplateError("TypeError", Cat(name, " arg must be None or str"));
      }
      chars = arg(a[0]->as_string());
    }
    return result(pystr::Strip(self, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"sep", "maxsplit"}));
    std::optional<std::string> sep;
    if (a[0] && !a[0]->is_none()) {
      if (!a[0]->is_string()) {
        return TemplateError("TypeError", Cat("must be str or None, not ", a[0]->TypeName()));
      }
      if (a[0]->as_string().empty()) return TemplateError("ValueError", "empty separator");
      sep = a[0]->as_string();
    }
    JINJA_ASSIGN_OR_RETURN(int64_t maxsplit, IntArg(a[1], -1, "maxsplit"));
    std::vector<std::string> parts;
    if (name == "rsplit" && maxsplit >= 0) {
      // Split the reversed text with the reversed separator, then undo.
      std::u32string r = pystr::Decode(self);
      std::reverse(r.begin(), r.end());
      std::optional<std::string> rsep;
      if (sep) {
        std::u32string s = pystr::Decode(*sep);
        std::reverse(s.begin(), s.end());
        rsep = pystr::Encode(s);
      }
      parts = pystr::Split(pystr::Encode(r), rsep, maxsplit);
      std::reverse(parts.begin(), parts.end());
      for (std::string& p : parts) {
        std::u32string s = pystr::Decode(p);
        std::reverse(s.begin(), s.end());
        p = pystr::Encode(s);
      }
    } else {
      parts = pystr::Split(self, sep, maxsplit);
    }
    Value::List out;
    for (std::string& p : parts) out.push_back(result(std::move(p)));
    return Value::MakeList(std::move(out));
  }
  if (name == "startswith" || name == "endswith") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"prefix"}));
    if (!a[0]) return TemplateError("TypeError", Cat(name, "() takes at least 1 argument"));
    std::vector<Value> options;
    if (a[0]->is_tuple()) {
      options = a[0]->as_list();
    } else {
      options.push_back(*a[0]);
    }
    for (const Value& o : options) {
      if (!o.is_string()) {
        return TemplateError(
            "TypeError", Cat(name, " first arg must be str or a tuple of str, not ", o.TypeName()));
      }
      if (name == "startswith" ? self.starts_with(o.as_string()) : self.ends_with(o.as_string())) {
        return Value::Bool(true);
      }
    }
    return Value::Bool(false);
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    if (name == "upper") return result(pystr::Upper(self));
    if (name == "lower") return result(pystr::Lower(self));
    if (name == "title") return result(pystr::Title(self));
    return result(pystr::Capitalize(self));
  }
  if (name == "replace") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"old", "new", "count"}));
    if (!a[0] || !a[1] || !a[0]->is_string() || !a[1]->is_string()) {
      return TemplateError("TypeError", "replace() arguments must be str");
    }
    JINJA_ASSIGN_OR_RETURN(int64_t count, IntArg(a[2], -1, "count"));
    CallArgs filter_args;
    filter_args.positional = {Str(arg(a[0]->as_string())), Str(arg(a[1]->as_string())),
                              Value::Int(count)};
    JINJA_ASSIGN_OR_RETURN(Value replaced, ApplyFilter(in, "replace", Str(self), filter_args));
    return result(replaced.as_string());
  }
  if (name == "find" || name == "rfind" || name == "count") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"sub"}));
    if (!a[0] || !a[0]->is_string()) {
      return TemplateError("TypeError", "must be str");
    }
    const std::string& sub = a[0]->as_string();
    if (name == "count") {
      if (sub.empty()) return Value::Int(static_cast<int64_t>(pystr::Length(self)) + 1);
      int64_t n = 0;
      for (size_t at = self.find(sub); at != std::string::npos;
           at = self.find(sub, at + sub.size())) {
        ++n;
      }
      return Value::Int(n);
    }
    const size_t at = name == "find" ? self.find(sub) : self.rfind(sub);
    if (at == std::string::npos) return Value::Int(-1);
    return Value::Int(static_cast<int64_t>(pystr::Length(self.substr(0, at))));
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    const std::u32string cps = pystr::Decode(self);
    if (name == "islower" || name == "isupper") {
      CallArgs none;
      JINJA_ASSIGN_OR_RETURN(bool r, ApplyTest(in, name.substr(2), Str(self), none));
      return Value::Bool(r);
    }
    if (cps.empty()) return Value::Bool(false);
    for (char32_t cp : cps) {
      bool ok;
      if (name == "isspace") {
        ok = pystr::IsSpace(cp);
      } else if (name == "isdigit") {
        ok = cp >= U'0' && cp <= U'9';
      } else if (name == "isalpha") {
        ok = pystr::IsCased(cp) || cp > 0x2E80;
      } else {
        ok = pystr::IsCased(cp) || cp > 0x2E80 || (cp >= U'0' && cp <= U'9');
      }
      if (!ok) return Value::Bool(false);
    }
    return Value::Bool(true);
  }
  if (name == "join") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"iterable"}));
    if (!a[0]) return TemplateError("TypeError", "join() takes exactly one argument");
    JINJA_ASSIGN_OR_RETURN(std::vector<Value> items, in.Iterate(*a[0]));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += self;
      if (markup) {  // Markup.join escapes what it joins
        JINJA_ASSIGN_OR_RETURN(std::string item, in.Str(items[i]));
        out += items[i].is_markup() ? item : HtmlEscape(item);
      } else if (items[i].is_string()) {
        out += items[i].as_string();
      } else {
        return TemplateError("TypeError", Cat("sequence item ", i, ": expected str instance, ",
                                              items[i].TypeName(), " found"));
      }
      JINJA_RETURN_IF_ERROR(in.ChargeString(out.size()));
    }
    return result(std::move(out));
  }
  if (name == "splitlines") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    Value::List out;
    for (std::string& line : pystr::SplitLines(self)) out.push_back(result(std::move(line)));
    return Value::MakeList(std::move(out));
  }
  return TemplateError("TypeError", Cat("str.", name, " is not supported"));
}

absl::StatusOr<Value> DictMethod(Interpreter& in, const Value& self, const std::string& name,
                                 CallArgs& call) {
  const Value::Dict& dict = self.as_dict();
  if (name == "get") {
    JINJA_ASSIGN_OR_RETURN(Args a, Bind("get", call, {"key", "default"}));
    if (!a[0]) return TemplateError("TypeError", "get expected at least 1 argument, got 0");
    if (a[0]->is_list() || a[0]->is_dict()) {
      return TemplateError("TypeError", Cat("unhashable type: '", a[0]->TypeName(), "'"));
    }
    if (const Value* v = dict.Find(*a[0])) return *v;
    return a[1] ? *a[1] : Value::None();
  }
  JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
  JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(dict.items.size())));
  Value::List out;
  if (name == "copy") return self;
  for (const auto& [k, v] : dict.items) {
    if (name == "items") {
      out.push_back(Value::MakeList({k, v}, true));
    } else {
      out.push_back(name == "keys" ? k : v);
    }
  }
  return Value::MakeList(std::move(out));
}

absl::StatusOr<Value> ListMethod(Interpreter& in, const Value& self, const std::string& name,
                                 CallArgs& call) {
  if (name == "copy") {
    JINJA_RETURN_IF_ERROR(Bind(name, call, {}).status());
    return self;
  }
  JINJA_ASSIGN_OR_RETURN(Args a, Bind(name, call, {"value"}));
  if (!a[0]) return TemplateError("TypeError", Cat(name, "() takes exactly one argument"));
  const auto& items = self.as_list();
  JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(items.size())));
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!PyEquals(items[i], *a[0])) continue;
    if (name == "index") return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (name == "index") {
    std::string repr;
    JINJA_RETURN_IF_ERROR(AppendRepr(*a[0], 4096, &repr));
    return TemplateError("ValueError", Cat(repr, " is not in list"));
  }
  return Value::Int(count);
}

const absl::flat_hash_set<std::string_view>& StrMethods() {
  static const auto* names = new absl::flat_hash_set<std::string_view>{
      "strip",    "lstrip",  "rstrip",  "split",   "rsplit",     "startswith",
      "endswith", "upper",   "lower",   "title",   "capitalize", "replace",
      "find",     "rfind",   "count",   "isdigit", "isalpha",    "isalnum",
      "isspace",  "islower", "isupper", "join",    "splitlines"};
  return *names;
}

Value Unsafe(std::string_view name, std::string_view type) {
  return Value::Undefined(
      Cat("SecurityError: access to attribute '", name, "' of '", type, "' object is unsafe."));
}

}  // namespace

bool IsKnownFilter(std::string_view name) {
  static const auto* names = new absl::flat_hash_set<std::string_view>{
      "tojson", "length", "count", "string", "safe", "trim", "upper", "lower", "capitalize",
      "title", "replace", "indent", "join", "list", "first", "last", "items", "map", "select",
      "reject", "selectattr", "rejectattr", "default", "d", "int", "float", "abs", "unique", "sort",
      "dictsort", "reverse", "min", "max", "sum", "attr",
      // Jinja2 builtins outside the subset: known names, refused when used.
      "batch", "center", "e", "escape", "filesizeformat", "forceescape", "format", "groupby",
      "pprint", "random", "round", "slice", "striptags", "truncate", "urlencode", "urlize",
      "wordcount", "wordwrap", "xmlattr"};
  return names->contains(name);
}

bool IsKnownTest(std::string_view name) {
  static const auto* names = new absl::flat_hash_set<std::string_view>{
      "defined",     "undefined", "none",     "string",  "number",   "integer",  "float",
      "boolean",     "true",      "false",    "mapping", "iterable", "sequence", "callable",
      "escaped",     "lower",     "upper",    "odd",     "even",     "filter",   "test",
      "divisibleby", "in",        "sameas",   "eq",      "equalto",  "==",       "ne",
      "!=",          "lt",        "lessthan", "<",       "le",       "<=",       "gt",
      "greaterthan", ">",         "ge",       ">="};
  return names->contains(name);
}

absl::StatusOr<Value> ApplyFilter(Interpreter& in, std::string_view name, const Value& input,
                                  CallArgs& args) {
  JINJA_RETURN_IF_ERROR(in.Charge(1));
  if (!IsKnownFilter(name)) {
    return TemplateError("TemplateRuntimeError", Cat("No filter named '", name, "' found."));
  }
  return DoFilter(in, name, input, args);
}

absl::StatusOr<bool> ApplyTest(Interpreter& in, std::string_view name, const Value& input,
                               CallArgs& args) {
  JINJA_RETURN_IF_ERROR(in.Charge(1));
  if (!IsKnownTest(name)) {
    return TemplateError("TemplateRuntimeError", Cat("No test named '", name, "' found."));
  }
  return DoTest(in, name, input, args);
}

std::optional<Value> BoundMethod(const Value& self, std::string_view name) {
  const std::string method(name);
  if (self.is_string()) {
    if (!StrMethods().contains(name)) return std::nullopt;
    return Value::MakeFunction(method, [self, method](Interpreter& in, CallArgs& args) {
      return StrMethod(in, self, method, args);
    });
  }
  if (self.is_dict()) {
    if (name == "items" || name == "keys" || name == "values" || name == "get" || name == "copy") {
      return Value::MakeFunction(method, [self, method](Interpreter& in, CallArgs& args) {
        return DictMethod(in, self, method, args);
      });
    }
    if (name == "pop" || name == "popitem" || name == "setdefault" || name == "update" ||
        name == "clear") {
      return Unsafe(name, "dict");
    }
    return std::nullopt;
  }
  if (self.is_sequence()) {
    if (name == "index" || name == "count" || (self.is_list() && name == "copy")) {
      return Value::MakeFunction(method, [self, method](Interpreter& in, CallArgs& args) {
        return ListMethod(in, self, method, args);
      });
    }
    if (self.is_list() &&
        (name == "append" || name == "extend" || name == "insert" || name == "pop" ||
         name == "remove" || name == "reverse" || name == "sort" || name == "clear")) {
      return Unsafe(name, "list");
    }
  }
  return std::nullopt;
}

void AddGlobals(Scope& scope) {
  scope.vars["range"] =
      Value::MakeFunction("range", [](Interpreter& in, CallArgs& call) -> absl::StatusOr<Value> {
        if (!call.keyword.empty())
          return TemplateError("TypeError", "range() takes no keyword arguments");
        const auto& p = call.positional;
        if (p.empty() || p.size() > 3) {
          return TemplateError("TypeError",
                               Cat("range expected at most 3 arguments, got ", p.size()));
        }
        for (const Value& v : p) {
          if (!v.is_int() && !v.is_bool()) {
            return TemplateError("TypeError", Cat("'", v.TypeName(),
                                                  "' object cannot be interpreted as an "
                                                  "integer"));
          }
        }
        const int64_t start = p.size() == 1 ? 0 : p[0].as_int();
        const int64_t stop = p.size() == 1 ? p[0].as_int() : p[1].as_int();
        const int64_t step = p.size() == 3 ? p[2].as_int() : 1;
        if (step == 0) return TemplateError("ValueError", "range() arg 3 must not be zero");
        // The sandbox's MAX_RANGE.
        const long double count =
            step > 0
                ? (stop > start ? (static_cast<long double>(stop) - start + step - 1) / step : 0)
                : (start > stop ? (static_cast<long double>(start) - stop - step - 1) / -step : 0);
        if (count > 100000) {
          return TemplateError("OverflowError",
                               "Range too big. The sandbox blocks ranges larger than MAX_RANGE "
                               "(100000).");
        }
        JINJA_RETURN_IF_ERROR(in.Charge(static_cast<int64_t>(count)));
        Value::List out;
        for (int64_t k = 0; k < static_cast<int64_t>(count); ++k) {
          out.push_back(Value::Int(start + k * step));
        }
        return Value::MakeList(std::move(out));
      });
  scope.vars["namespace"] = Value::MakeFunction(
      "namespace", [](Interpreter& in, CallArgs& call) -> absl::StatusOr<Value> {
        Value ns = in.NewNamespace();
        if (call.positional.size() > 1) {
          return TemplateError("TypeError", "namespace() takes at most one positional argument");
        }
        if (!call.positional.empty()) {
          if (!call.positional[0].is_dict()) {
            return TemplateError("TypeError", "namespace() argument must be a mapping");
          }
          for (const auto& [k, v] : call.positional[0].as_dict().items) {
            if (!k.is_string()) return TemplateError("TypeError", "keywords must be strings");
            ns.as_object().Set(k.as_string(), v);
          }
        }
        for (const auto& [k, v] : call.keyword) ns.as_object().Set(k, v);
        JINJA_RETURN_IF_ERROR(in.CheckDepth(ns));
        return ns;
      });
  scope.vars["dict"] =
      Value::MakeFunction("dict", [](Interpreter& in, CallArgs& call) -> absl::StatusOr<Value> {
        if (!call.positional.empty()) {
          return TemplateError("TypeError", "dict() with positional arguments is not supported");
        }
        Value::Dict dict;
        for (const auto& [k, v] : call.keyword) dict.items.emplace_back(Str(k), v);
        Value d = Value::MakeDict(std::move(dict));
        JINJA_RETURN_IF_ERROR(in.CheckDepth(d));
        return d;
      });
  scope.vars["raise_exception"] = Value::MakeFunction(
      "raise_exception", [](Interpreter& in, CallArgs& call) -> absl::StatusOr<Value> {
        JINJA_ASSIGN_OR_RETURN(Args a, Bind("raise_exception", call, {"message"}));
        if (!a[0]) {
          return TemplateError("TypeError",
                               "raise_exception() missing 1 required positional argument: "
                               "'message'");
        }
        JINJA_ASSIGN_OR_RETURN(std::string message, in.Str(*a[0]));
        return absl::AbortedError(message);
      });
  scope.vars["strftime_now"] = Value::MakeFunction(
      "strftime_now", [](Interpreter& in, CallArgs& call) -> absl::StatusOr<Value> {
        JINJA_ASSIGN_OR_RETURN(Args a, Bind("strftime_now", call, {"format"}));
        if (!a[0] || !a[0]->is_string()) {
          return TemplateError("TypeError", "strftime() argument 1 must be str");
        }
        std::tm tm{};
        if (in.options().now) {
          tm = in.options().now();
        } else {
          const std::time_t t = std::time(nullptr);
          localtime_r(&t, &tm);
        }
        const std::string& format = a[0]->as_string();
        if (format.size() > 1024) return TemplateError("ValueError", "format too long");
        std::string out(format.size() * 32 + 64, '\0');
        const size_t n =
            format.empty() ? 0 : std::strftime(out.data(), out.size(), format.c_str(), &tm);
        out.resize(n);
        return Str(std::move(out));
      });
}

}  // namespace jinja
