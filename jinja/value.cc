// jinja::Value: conversions from JSON, Python's str()/repr()/==, and
// json.dumps as transformers' tojson calls it.
#include "jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "jinja/pystr.h"
#include "jinja/status_macros.h"

namespace jinja {
namespace {

constexpr int kMaxNesting = 512;

absl::Status TooLong(size_t max_bytes) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "LimitError: a string or the output grew past the limit of ", max_bytes, " bytes"));
}

absl::Status TooDeep() {
  return absl::ResourceExhaustedError(
      absl::StrCat("LimitError: values nested deeper than ", kMaxNesting));
}

// A float equal to an integer, as that integer (for exact comparison).
bool IntegralFloat(double f, int64_t* out) {
  if (!std::isfinite(f) || f != std::floor(f)) return false;
  if (f < -9.2233720368547758e18 || f >= 9.2233720368547758e18) return false;
  *out = static_cast<int64_t>(f);
  return true;
}

bool NumbersEqual(const Value& a, const Value& b) {
  if (!a.is_float() && !b.is_float()) return a.as_int() == b.as_int();
  if (a.is_float() && b.is_float()) return a.as_float() == b.as_float();
  const double f = a.is_float() ? a.as_float() : b.as_float();
  const int64_t i = a.is_float() ? b.as_int() : a.as_int();
  int64_t fi;
  return IntegralFloat(f, &fi) && fi == i;
}

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (char32_t cp : pystr::Decode(s)) {
    switch (cp) {
      case U'"':
        out->append("\\\"");
        continue;
      case U'\\':
        out->append("\\\\");
        continue;
      case U'\n':
        out->append("\\n");
        continue;
      case U'\r':
        out->append("\\r");
        continue;
      case U'\t':
        out->append("\\t");
        continue;
      case U'\b':
        out->append("\\b");
        continue;
      case U'\f':
        out->append("\\f");
        continue;
      default:
        break;
    }
    const bool escape = cp < 0x20 || (ensure_ascii && cp > 0x7E && !(cp >= 0xDC80 && cp <= 0xDCFF));
    if (!escape) {
      pystr::AppendCodePoint(cp, out);
    } else if (cp >= 0x10000) {
      const char32_t v = cp - 0x10000;
      absl::StrAppend(out, "\\u", absl::Hex(0xD800 + (v >> 10), absl::kZeroPad4), "\\u",
                      absl::Hex(0xDC00 + (v & 0x3FF), absl::kZeroPad4));
    } else {
      absl::StrAppend(out, "\\u", absl::Hex(cp, absl::kZeroPad4));
    }
  }
  out->push_back('"');
}

std::string JsonFloat(double f) {
  if (std::isnan(f)) return "NaN";
  if (std::isinf(f)) return f > 0 ? "Infinity" : "-Infinity";
  return FloatRepr(f);
}

// A dict key as json.dumps writes it, or an error for keys it refuses.
absl::StatusOr<std::string> JsonKey(const Value& key) {
  switch (key.kind()) {
    case Value::Kind::kString:
      return key.as_string();
    case Value::Kind::kInt:
      return absl::StrCat(key.as_int());
    case Value::Kind::kFloat:
      return JsonFloat(key.as_float());
    case Value::Kind::kBool:
      return std::string(key.as_bool() ? "true" : "false");
    case Value::Kind::kNone:
      return std::string("null");
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "TypeError: keys must be str, int, float, bool or None, not ", key.TypeName()));
  }
}

}  // namespace

const Value* Value::Dict::Find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (PyEquals(k, key)) return &v;
  }
  return nullptr;
}

const Value* Value::Object::Find(std::string_view name) const {
  for (const auto& [k, v] : attrs) {
    if (k == name) return &v;
  }
  return nullptr;
}

void Value::Object::Set(std::string_view name, Value value) {
  depth = std::max(depth, value.depth() + 1);
  for (auto& [k, v] : attrs) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  attrs.emplace_back(std::string(name), std::move(value));
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& json, int max_depth) {
  if (max_depth < 0) return absl::InvalidArgumentError("JSON nested too deeply");
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Float(static_cast<double>(u));
      }
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return String(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(json.size());
      for (const auto& item : json) {
        auto v = FromJson(item, max_depth - 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return MakeList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      dict.items.reserve(json.size());
      for (const auto& [key, item] : json.items()) {
        auto v = FromJson(item, max_depth - 1);
        if (!v.ok()) return v.status();
        dict.items.emplace_back(String(key), *std::move(v));
      }
      return MakeDict(std::move(dict));
    }
    default:
      return absl::InvalidArgumentError("JSON value of an unsupported type (binary)");
  }
}

bool Value::SameStorage(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kList:
    case Kind::kTuple:
      return list_ == other.list_;
    case Kind::kDict:
      return dict_ == other.dict_;
    case Kind::kObject:
      return object_ == other.object_;
    case Kind::kFunction:
      return function_ == other.function_;
    default:
      return false;
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !str_.empty();
    case Kind::kList:
    case Kind::kTuple:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->items.empty();
    default:
      return true;
  }
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return markup_ ? "Markup" : "str";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kObject:
      return object_->type_name;
    case Kind::kFunction:
      return "function";
  }
  return "object";
}

std::string Value::ObjectTypeRepr() const {
  if (kind_ == Kind::kNone) return "None";
  if (is_markup()) return "markupsafe.Markup object";
  if (kind_ == Kind::kObject) {
    return absl::StrCat(object_->type_name == "Namespace" ? "jinja2.utils." : "jinja2.runtime.",
                        object_->type_name, " object");
  }
  return absl::StrCat(TypeName(), " object");
}

std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (f == 0) return std::signbit(f) ? "-0.0" : "0.0";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string_view sci(buf, end - buf);  // [-]d[.ddd]e[+-]XX
  std::string out;
  if (sci[0] == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits.push_back(c);
  }
  int exp = 0;
  std::from_chars(sci.data() + e + 1 + (sci[e + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exp);
  const int decpt = exp + 1;  // value = 0.digits * 10^decpt
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out.push_back(digits[0]);
    if (n > 1) absl::StrAppend(&out, ".", digits.substr(1));
    const int x = decpt - 1;
    absl::StrAppend(&out, "e", x < 0 ? "-" : "+", x > -10 && x < 10 ? "0" : "", std::abs(x));
  } else if (decpt <= 0) {
    absl::StrAppend(&out, "0.", std::string(-decpt, '0'), digits);
  } else if (decpt >= n) {
    absl::StrAppend(&out, digits, std::string(decpt - n, '0'), ".0");
  } else {
    absl::StrAppend(&out, digits.substr(0, decpt), ".", digits.substr(decpt));
  }
  return out;
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string StringRepr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t cp : pystr::Decode(s)) {
    if (cp == static_cast<char32_t>(quote) || cp == U'\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == U'\n') {
      out.append("\\n");
    } else if (cp == U'\r') {
      out.append("\\r");
    } else if (cp == U'\t') {
      out.append("\\t");
    } else if (cp >= 0xDC80 && cp <= 0xDCFF) {
      absl::StrAppend(&out, "\\udc", absl::Hex(cp & 0xFF, absl::kZeroPad2));
    } else if (pystr::IsPrintable(cp)) {
      pystr::AppendCodePoint(cp, &out);
    } else if (cp < 0x100) {
      absl::StrAppend(&out, "\\x", absl::Hex(cp, absl::kZeroPad2));
    } else if (cp < 0x10000) {
      absl::StrAppend(&out, "\\u", absl::Hex(cp, absl::kZeroPad4));
    } else {
      absl::StrAppend(&out, "\\U", absl::Hex(cp, absl::kZeroPad8));
    }
  }
  out.push_back(quote);
  return out;
}

bool PyEquals(const Value& a, const Value& b, int depth) {
  if (depth > kMaxNesting) return false;
  if (a.is_number() && b.is_number()) return NumbersEqual(a, b);
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.as_string() == b.as_string();
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      if (a.SameStorage(b)) return true;
      const auto& x = a.as_list();
      const auto& y = b.as_list();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!PyEquals(x[i], y[i], depth + 1)) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      if (a.SameStorage(b)) return true;
      const auto& x = a.as_dict();
      const auto& y = b.as_dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* other = y.Find(k);
        if (other == nullptr || !PyEquals(v, *other, depth + 1)) return false;
      }
      return true;
    }
    default:
      return a.SameStorage(b);
  }
}

absl::Status AppendStr(const Value& v, size_t max_bytes, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return absl::OkStatus();
    case Value::Kind::kString:
      if (out->size() + v.as_string().size() > max_bytes) return TooLong(max_bytes);
      out->append(v.as_string());
      return absl::OkStatus();
    default:
      return AppendRepr(v, max_bytes, out);
  }
}

absl::Status AppendRepr(const Value& v, size_t max_bytes, std::string* out, int depth) {
  if (depth > kMaxNesting) return TooDeep();
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      out->append("Undefined");
      break;
    case Value::Kind::kNone:
      out->append("None");
      break;
    case Value::Kind::kBool:
      out->append(v.as_bool() ? "True" : "False");
      break;
    case Value::Kind::kInt:
      absl::StrAppend(out, v.as_int());
      break;
    case Value::Kind::kFloat:
      out->append(FloatRepr(v.as_float()));
      break;
    case Value::Kind::kString:
      if (v.is_markup()) {
        CatTo(out, "Markup(", StringRepr(v.as_string()), ")");
      } else {
        out->append(StringRepr(v.as_string()));
      }
      break;
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      const auto& items = v.as_list();
      out->push_back(v.is_tuple() ? '(' : '[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(", ");
        if (auto s = AppendRepr(items[i], max_bytes, out, depth + 1); !s.ok()) return s;
      }
      if (v.is_tuple() && items.size() == 1) out->push_back(',');
      out->push_back(v.is_tuple() ? ')' : ']');
      break;
    }
    case Value::Kind::kDict: {
      out->push_back('{');
      bool first = true;
      for (const auto& [k, item] : v.as_dict().items) {
        if (!first) out->append(", ");
        first = false;
        if (auto s = AppendRepr(k, max_bytes, out, depth + 1); !s.ok()) return s;
        out->append(": ");
        if (auto s = AppendRepr(item, max_bytes, out, depth + 1); !s.ok()) return s;
      }
      out->push_back('}');
      break;
    }
    case Value::Kind::kObject: {
      const Value::Object& object = v.as_object();
      absl::StrAppend(out, "<", object.type_name, " {");
      bool first = true;
      for (const auto& [name, item] : object.attrs) {
        if (!first) out->append(", ");
        first = false;
        absl::StrAppend(out, StringRepr(name), ": ");
        if (auto s = AppendRepr(item, max_bytes, out, depth + 1); !s.ok()) return s;
      }
      out->append("}>");
      break;
    }
    case Value::Kind::kFunction:
      absl::StrAppend(out, "<function ", v.as_function().name, ">");
      break;
  }
  if (out->size() > max_bytes) return TooLong(max_bytes);
  return absl::OkStatus();
}

absl::Status AppendJson(const Value& v, const JsonOptions& options, size_t max_bytes,
                        std::string* out, int depth) {
  if (depth > kMaxNesting) return TooDeep();
  auto newline = [&](int level) {
    if (!options.has_indent) return;
    out->push_back('\n');
    for (int i = 0; i < level; ++i) out->append(options.indent);
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out->append("null");
      break;
    case Value::Kind::kBool:
      out->append(v.as_bool() ? "true" : "false");
      break;
    case Value::Kind::kInt:
      absl::StrAppend(out, v.as_int());
      break;
    case Value::Kind::kFloat:
      out->append(JsonFloat(v.as_float()));
      break;
    case Value::Kind::kString:
      AppendJsonString(v.as_string(), options.ensure_ascii, out);
      break;
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      const auto& items = v.as_list();
      if (items.empty()) {
        out->append("[]");
        break;
      }
      out->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(options.item_separator);
        newline(depth + 1);
        if (auto s = AppendJson(items[i], options, max_bytes, out, depth + 1); !s.ok()) return s;
      }
      newline(depth);
      out->push_back(']');
      break;
    }
    case Value::Kind::kDict: {
      const auto& dict = v.as_dict();
      if (dict.items.empty()) {
        out->append("{}");
        break;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& item : dict.items) items.push_back(&item);
      if (options.sort_keys) {
        const bool strings = std::all_of(items.begin(), items.end(),
                                         [](const auto* kv) { return kv->first.is_string(); });
        const bool numbers = std::all_of(items.begin(), items.end(),
                                         [](const auto* kv) { return kv->first.is_number(); });
        if (!strings && !numbers) {
          return absl::InvalidArgumentError(
              "TypeError: '<' not supported between dict keys of different types");
        }
        std::stable_sort(items.begin(), items.end(), [&](const auto* x, const auto* y) {
          if (strings) return x->first.as_string() < y->first.as_string();
          return x->first.as_float() < y->first.as_float();
        });
      }
      out->push_back('{');
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out->append(options.item_separator);
        first = false;
        newline(depth + 1);
        auto key = JsonKey(kv->first);
        if (!key.ok()) return key.status();
        AppendJsonString(*key, options.ensure_ascii, out);
        out->append(options.key_separator);
        if (auto s = AppendJson(kv->second, options, max_bytes, out, depth + 1); !s.ok()) return s;
      }
      newline(depth);
      out->push_back('}');
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("TypeError: Object of type ", v.TypeName(), " is not JSON serializable"));
  }
  if (out->size() > max_bytes) return TooLong(max_bytes);
  return absl::OkStatus();
}

}  // namespace jinja
