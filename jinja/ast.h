// The syntax tree the parser builds and the interpreter walks: expressions
// and statements of the Jinja subset chat templates use.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/value.h"

namespace jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kConst,     // value
    kName,      // name
    kList,      // children
    kTuple,     // children
    kDict,      // children: key, value, key, value...
    kGetattr,   // children[0].name
    kGetitem,   // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (each may be null)
    kCall,      // children[0](children[1..], kwargs)
    kFilter,    // children[0]|name(children[1..], kwargs); children[0] null in filter blocks
    kTest,      // children[0] is name(children[1..], kwargs)
    kUnary,     // name ("-", "+", "not") children[0]
    kBinary,    // children[0] name children[1]; name is + - * / // % ** ~
    kAnd,       // children[0] and children[1]
    kOr,        // children[0] or children[1]
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2]...
    kCondExpr,  // children[1] if children[0] else children[2] (may be null)
  };
  Kind kind;
  int line = 0;
  int depth = 1;  // of the tree below, bounded by the parser
  Value value;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,         // text
    kPrint,        // {{ expr }}
    kIf,           // conditions[i] -> bodies[i], else_body
    kFor,          // for target in expr [if filter]: bodies[0] else else_body
    kSet,          // set target = expr
    kSetBlock,     // set target [| filter] %} bodies[0] {% endset
    kMacro,        // macro name(params = defaults) bodies[0]
    kFilterBlock,  // filter expr (a kFilter chain over null) bodies[0]
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0;
  std::string text;  // kText; the macro's name
  ExprPtr expr;      // printed value, iterable, assigned value, filter chain
  ExprPtr target;    // kFor/kSet: a name, a tuple of names, or ns.attr
  ExprPtr filter;    // kFor's `if`, kSetBlock's filter chain
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body else_body;
  std::vector<std::string> params;  // kMacro
  std::vector<ExprPtr> defaults;    // kMacro, null where none
};

}  // namespace jinja
