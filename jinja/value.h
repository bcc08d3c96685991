// jinja::Value: what a template computes with, with Python's semantics
// (None/True/False, ints apart from floats, insertion-ordered dicts, str()
// and repr() as Python writes them) and Jinja2's Undefined.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace jinja {

class Value;
class Interpreter;

// Arguments of a call: positional, then keyword in the order written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A function a template can call: a global, a bound method, a macro.
struct Function {
  std::string name;
  std::function<absl::StatusOr<Value>(Interpreter&, CallArgs&)> call;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kTuple,
    kDict,
    kObject,  // namespace() and loop: named attributes
    kFunction,
  };
  using List = std::vector<Value>;
  // Insertion-ordered, keys compared as Python compares them (1 == 1.0 == True).
  struct Dict {
    std::vector<std::pair<Value, Value>> items;
    const Value* Find(const Value& key) const;
  };
  // An attribute bag; a namespace is mutable through `set ns.attr`.
  struct Object {
    std::string type_name;  // as Jinja2's messages name it
    int depth = 1;          // at least the nesting below (never lowered)
    std::vector<std::pair<std::string, Value>> attrs;
    const Value* Find(std::string_view name) const;
    void Set(std::string_view name, Value value);
  };

  Value() = default;  // undefined
  static Value Undefined(std::string message) {
    Value v;
    v.str_ = std::move(message);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  static Value Bool(bool b) {
    Value v(Kind::kBool);
    v.int_ = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(Kind::kInt);
    v.int_ = i;
    return v;
  }
  static Value Float(double f) {
    Value v(Kind::kFloat);
    v.float_ = f;
    return v;
  }
  static Value String(std::string s) {
    Value v(Kind::kString);
    v.str_ = std::move(s);
    return v;
  }
  // markupsafe.Markup, what |safe returns: a string that `+` does not escape
  // but whose other operand it escapes, and that repr() writes as Markup('...').
  static Value Markup(std::string s) {
    Value v = String(std::move(s));
    v.markup_ = true;
    return v;
  }
  static Value MakeList(List items, bool tuple = false) {
    Value v(tuple ? Kind::kTuple : Kind::kList);
    for (const Value& item : items) v.depth_ = std::max(v.depth_, item.depth() + 1);
    v.list_ = std::make_shared<const List>(std::move(items));
    return v;
  }
  static Value MakeDict(Dict dict) {
    Value v(Kind::kDict);
    for (const auto& [key, item] : dict.items) {
      v.depth_ = std::max({v.depth_, key.depth() + 1, item.depth() + 1});
    }
    v.dict_ = std::make_shared<const Dict>(std::move(dict));
    return v;
  }
  static Value MakeObject(std::shared_ptr<Object> object) {
    Value v(Kind::kObject);
    v.object_ = std::move(object);
    return v;
  }
  static Value MakeFunction(std::string name,
                            std::function<absl::StatusOr<Value>(Interpreter&, CallArgs&)> call) {
    Value v(Kind::kFunction);
    v.function_ = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
    return v;
  }
  // Converts JSON (key order kept); nesting deeper than max_depth is an error.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json, int max_depth = 256);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // int, float or bool: what Python's arithmetic accepts.
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_markup() const { return kind_ == Kind::kString && markup_; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_sequence() const { return is_list() || is_tuple(); }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  // How deeply containers nest inside (0 for a scalar).
  int depth() const { return kind_ == Kind::kObject ? object_->depth : depth_; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }  // also a bool's 0/1
  double as_float() const { return is_float() ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }
  const std::string& undefined_message() const { return str_; }
  const List& as_list() const { return *list_; }
  const Dict& as_dict() const { return *dict_; }
  Object& as_object() const { return *object_; }
  const Function& as_function() const { return *function_; }
  // Whether both are the same stored list/dict/object (Python's `is`).
  bool SameStorage(const Value& other) const;

  // Python's bool(): empty, zero, None and Undefined are false.
  bool Truthy() const;
  // The Python type name used in TypeError messages: 'str', 'NoneType', ...
  std::string TypeName() const;
  // How Jinja2 names the type in "... has no attribute" messages.
  std::string ObjectTypeRepr() const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}

  Kind kind_ = Kind::kUndefined;
  int depth_ = 0;
  bool markup_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;  // a string, or an undefined value's error message
  std::shared_ptr<const List> list_;
  std::shared_ptr<const Dict> dict_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<const Function> function_;
};

// Python's float repr: 1.0, 0.1, 1e+20, 1e-05, inf, nan.
std::string FloatRepr(double f);
// markupsafe's escape: & < > " ' as HTML entities.
std::string HtmlEscape(std::string_view s);
// Python's repr() of a string: quotes chosen as Python does, escapes.
std::string StringRepr(std::string_view s);
// Python's ==, for values (numbers across int/float/bool, lists, dicts).
// Values nested deeper than this are compared as unequal.
bool PyEquals(const Value& a, const Value& b, int depth = 0);

// str() and repr() as Python writes them, appended to *out; an error when
// *out would grow past max_bytes or values nest deeper than 512.
absl::Status AppendStr(const Value& v, size_t max_bytes, std::string* out);
absl::Status AppendRepr(const Value& v, size_t max_bytes, std::string* out, int depth = 0);

// json.dumps's settings, as transformers' tojson passes them.
struct JsonOptions {
  bool ensure_ascii = false;
  std::string indent;  // used when has_indent
  bool has_indent = false;
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// json.dumps(v), appended to *out (TypeError for what JSON cannot hold).
absl::Status AppendJson(const Value& v, const JsonOptions& options, size_t max_bytes,
                        std::string* out, int depth = 0);

}  // namespace jinja
