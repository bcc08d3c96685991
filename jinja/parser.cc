// Jinja2's parser (jinja2/parser.py) for the supported statements and the
// full expression grammar, with nesting bounded (see parser.h).
#include "jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/status_macros.h"

namespace jinja {
namespace {

constexpr int kMaxNesting = 300;  // parser recursion (about 3 levels per parenthesis)
constexpr int kMaxExprDepth = 400;  // of one expression tree (chains too)

std::string Describe(const Token& t) {
  switch (t.type) {
    case Token::Type::kData:
      return "template data";
    case Token::Type::kVarBegin:
      return "begin of print statement";
    case Token::Type::kVarEnd:
      return "end of print statement";
    case Token::Type::kBlockBegin:
      return "begin of statement block";
    case Token::Type::kBlockEnd:
      return "end of statement block";
    case Token::Type::kEof:
      return "end of template";
    default:
      return t.text;
  }
}

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  absl::StatusOr<Body> ParseTemplate() {
    JINJA_ASSIGN_OR_RETURN(Body body, Subparse({}));
    if (cur().type != Token::Type::kEof) {
      return Fail(Cat("Encountered unknown tag '", cur().text, "'."));
    }
    return body;
  }

 private:
  const Token& cur() const { return t_[pos_]; }
  const Token& peek() const { return t_[std::min(pos_ + 1, t_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < t_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return cur().type == Token::Type::kOperator && cur().text == op;
  }
  bool IsName(std::string_view name) const {
    return cur().type == Token::Type::kName && cur().text == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  absl::Status Fail(std::string_view message) const {
    return absl::InvalidArgumentError(
        Cat("TemplateSyntaxError: ", message, " (line ", cur().line, ")"));
  }
  absl::Status ExpectOp(std::string_view op) {
    if (SkipOp(op)) return absl::OkStatus();
    return Fail(Cat("expected token '", op, "', got '", Describe(cur()), "'"));
  }
  absl::Status Expect(Token::Type type, std::string_view what) {
    if (cur().type == type) {
      Next();
      return absl::OkStatus();
    }
    return Fail(Cat("expected token '", what, "', got '", Describe(cur()), "'"));
  }
  absl::Status ExpectBlockEnd() { return Expect(Token::Type::kBlockEnd, "end of statement block"); }
  absl::StatusOr<std::string> ExpectName() {
    if (cur().type != Token::Type::kName) {
      return Fail(Cat("expected token 'name', got '", Describe(cur()), "'"));
    }
    std::string name = cur().text;
    Next();
    return name;
  }

  ExprPtr NewExpr(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  // Sets e's depth from its children; an error past kMaxExprDepth.
  absl::StatusOr<ExprPtr> Finish(ExprPtr e) {
    int depth = 0;
    for (const auto& c : e->children) {
      if (c) depth = std::max(depth, c->depth);
    }
    for (const auto& [k, c] : e->kwargs) depth = std::max(depth, c->depth);
    e->depth = depth + 1;
    if (e->depth > kMaxExprDepth) return Fail("expression nested too deeply");
    return e;
  }
  absl::StatusOr<ExprPtr> Binary(Expr::Kind kind, std::string op, ExprPtr a, ExprPtr b) {
    ExprPtr e = NewExpr(kind, a->line);
    e->name = std::move(op);
    e->children.push_back(std::move(a));
    e->children.push_back(std::move(b));
    return Finish(std::move(e));
  }

  // Guards recursion: statement blocks, parentheses, unary chains.
  class Nest {
   public:
    explicit Nest(Parser* p) : p_(p) { ++p_->nesting_; }
    ~Nest() { --p_->nesting_; }
    bool too_deep() const { return p_->nesting_ > kMaxNesting; }

   private:
    Parser* p_;
  };

  absl::StatusOr<Body> Subparse(std::initializer_list<std::string_view> end_tokens) {
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case Token::Type::kData: {
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kText;
          s->line = t.line;
          s->text = t.text;
          body.push_back(std::move(s));
          Next();
          break;
        }
        case Token::Type::kVarBegin: {
          Next();
          auto s = std::make_unique<Stmt>();
          s->kind = Stmt::Kind::kPrint;
          s->line = t.line;
          JINJA_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, true, {}, false));
          JINJA_RETURN_IF_ERROR(Expect(Token::Type::kVarEnd, "end of print statement"));
          body.push_back(std::move(s));
          break;
        }
        case Token::Type::kBlockBegin: {
          Next();
          if (cur().type == Token::Type::kName &&
              std::find(end_tokens.begin(), end_tokens.end(), cur().text) != end_tokens.end()) {
            return body;
          }
          JINJA_ASSIGN_OR_RETURN(StmtPtr s, ParseStatement());
          body.push_back(std::move(s));
          break;
        }
        case Token::Type::kEof:
          if (end_tokens.size() != 0) {
            std::string wanted;
            for (std::string_view e : end_tokens) {
              CatTo(&wanted, wanted.empty() ? "" : " or ", "'", e, "'");
            }
            return Fail(Cat(
                "Unexpected end of template. Jinja was looking for the following tags: ", wanted,
                "."));
          }
          return body;
        default:
          return Fail(Cat("unexpected '", Describe(t), "'"));
      }
    }
  }

  absl::StatusOr<StmtPtr> ParseStatement() {
    Nest nest(this);
    if (nest.too_deep()) return Fail("blocks nested too deeply");
    if (cur().type != Token::Type::kName) return Fail("tag name expected");
    const std::string tag = cur().text;
    auto s = std::make_unique<Stmt>();
    s->line = cur().line;
    Next();
    if (tag == "for") return ParseFor(std::move(s));
    if (tag == "if") return ParseIf(std::move(s));
    if (tag == "set") return ParseSet(std::move(s));
    if (tag == "macro") return ParseMacro(std::move(s));
    if (tag == "filter") {
      s->kind = Stmt::Kind::kFilterBlock;
      JINJA_ASSIGN_OR_RETURN(s->expr, ParseFilter(nullptr, /*start_inline=*/true));
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return ParseBlockBody(std::move(s), "endfilter");
    }
    if (tag == "print") {
      s->kind = Stmt::Kind::kPrint;
      JINJA_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, true, {}, false));
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) return Fail(Cat("'", tag, "' outside of a loop"));
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    pos_ -= 1;
    return Fail(Cat("Encountered unknown tag '", tag, "'."));
  }

  // Parses the body up to `end`, then the end tag.
  absl::StatusOr<StmtPtr> ParseBlockBody(StmtPtr s, std::string_view end) {
    JINJA_ASSIGN_OR_RETURN(Body body, Subparse({end}));
    s->bodies.push_back(std::move(body));
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseFor(StmtPtr s) {
    s->kind = Stmt::Kind::kFor;
    JINJA_ASSIGN_OR_RETURN(s->target, ParseAssignTarget(false, {"in"}));
    if (!SkipName("in")) return Fail("expected 'in'");
    JINJA_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, false, {"recursive"}, false));
    if (SkipName("if")) {
      JINJA_ASSIGN_OR_RETURN(s->filter, ParseExpression(true));
    }
    if (IsName("recursive")) return Fail("recursive loops are not supported");
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    auto body = Subparse({"endfor", "else"});
    --loop_depth_;
    if (!body.ok()) return body.status();
    s->bodies.push_back(*std::move(body));
    if (SkipName("else")) {
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      JINJA_ASSIGN_OR_RETURN(s->else_body, Subparse({"endfor"}));
    }
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return s;
  }

  absl::StatusOr<StmtPtr> ParseIf(StmtPtr s) {
    s->kind = Stmt::Kind::kIf;
    while (true) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(false, false, {}, false));
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      JINJA_ASSIGN_OR_RETURN(Body body, Subparse({"elif", "else", "endif"}));
      s->conditions.push_back(std::move(cond));
      s->bodies.push_back(std::move(body));
      if (SkipName("elif")) continue;
      if (SkipName("else")) {
        JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
        JINJA_ASSIGN_OR_RETURN(s->else_body, Subparse({"endif"}));
      }
      Next();
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
  }

  absl::StatusOr<StmtPtr> ParseSet(StmtPtr s) {
    JINJA_ASSIGN_OR_RETURN(s->target, ParseAssignTarget(true, {}));
    if (SkipOp("=")) {
      s->kind = Stmt::Kind::kSet;
      JINJA_ASSIGN_OR_RETURN(s->expr, ParseTuple(false, true, {}, false));
      JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    s->kind = Stmt::Kind::kSetBlock;
    if (IsOp("|")) {
      JINJA_ASSIGN_OR_RETURN(s->filter, ParseFilter(nullptr, false));
    }
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    return ParseBlockBody(std::move(s), "endset");
  }

  absl::StatusOr<StmtPtr> ParseMacro(StmtPtr s) {
    s->kind = Stmt::Kind::kMacro;
    JINJA_ASSIGN_OR_RETURN(s->text, ExpectName());
    JINJA_RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (!s->params.empty()) JINJA_RETURN_IF_ERROR(ExpectOp(","));
      JINJA_ASSIGN_OR_RETURN(std::string param, ExpectName());
      s->params.push_back(param);
      if (SkipOp("=")) {
        JINJA_ASSIGN_OR_RETURN(ExprPtr d, ParseExpression(true));
        s->defaults.push_back(std::move(d));
      } else {
        if (std::any_of(s->defaults.begin(), s->defaults.end(),
                        [](const ExprPtr& d) { return d != nullptr; })) {
          return Fail("non-default argument follows default argument");
        }
        s->defaults.push_back(nullptr);
      }
    }
    Next();
    JINJA_RETURN_IF_ERROR(ExpectBlockEnd());
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    auto result = ParseBlockBody(std::move(s), "endmacro");
    loop_depth_ = saved_loops;
    return result;
  }

  // A name, ns.attr (with_namespace) or a tuple of names.
  absl::StatusOr<ExprPtr> ParseAssignTarget(bool with_namespace,
                                            std::initializer_list<std::string_view> extra_end) {
    ExprPtr target;
    if (with_namespace && cur().type == Token::Type::kName &&
        peek().type == Token::Type::kOperator && peek().text == ".") {
      target = NewExpr(Expr::Kind::kGetattr, cur().line);
      ExprPtr ns = NewExpr(Expr::Kind::kName, cur().line);
      ns->name = cur().text;
      Next();
      Next();
      JINJA_ASSIGN_OR_RETURN(target->name, ExpectName());
      target->children.push_back(std::move(ns));
      return target;
    }
    JINJA_ASSIGN_OR_RETURN(target, ParseTuple(true, true, extra_end, false));
    JINJA_RETURN_IF_ERROR(CheckAssignable(*target));
    return target;
  }

  absl::Status CheckAssignable(const Expr& e) {
    if (e.kind == Expr::Kind::kName) return absl::OkStatus();
    if (e.kind == Expr::Kind::kTuple) {
      for (const auto& c : e.children) JINJA_RETURN_IF_ERROR(CheckAssignable(*c));
      return absl::OkStatus();
    }
    return Fail("can't assign to this expression");
  }

  bool IsTupleEnd(std::initializer_list<std::string_view> extra_end) const {
    const Token& t = cur();
    if (t.type == Token::Type::kVarEnd || t.type == Token::Type::kBlockEnd ||
        t.type == Token::Type::kEof || IsOp(")")) {
      return true;
    }
    return t.type == Token::Type::kName &&
           std::find(extra_end.begin(), extra_end.end(), t.text) != extra_end.end();
  }

  absl::StatusOr<ExprPtr> ParseTuple(bool simplified, bool with_condexpr,
                                     std::initializer_list<std::string_view> extra_end,
                                     bool explicit_parentheses) {
    const int line = cur().line;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) JINJA_RETURN_IF_ERROR(ExpectOp(","));
      if (IsTupleEnd(extra_end)) break;
      ExprPtr e;
      if (simplified) {
        JINJA_ASSIGN_OR_RETURN(e, ParsePrimary());
      } else {
        JINJA_ASSIGN_OR_RETURN(e, ParseExpression(with_condexpr));
      }
      args.push_back(std::move(e));
      if (!IsOp(",")) break;
      is_tuple = true;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parentheses) {
        return Fail(Cat("Expected an expression, got '", Describe(cur()), "'"));
      }
    }
    ExprPtr t = NewExpr(Expr::Kind::kTuple, line);
    t->children = std::move(args);
    return Finish(std::move(t));
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  absl::StatusOr<ExprPtr> ParseCondExpr() {
    Nest nest(this);
    if (nest.too_deep()) return Fail("expression nested too deeply");
    JINJA_ASSIGN_OR_RETURN(ExprPtr expr1, ParseOr());
    while (SkipName("if")) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr expr2, ParseOr());
      ExprPtr expr3;
      if (SkipName("else")) {
        JINJA_ASSIGN_OR_RETURN(expr3, ParseCondExpr());
      }
      ExprPtr c = NewExpr(Expr::Kind::kCondExpr, expr1->line);
      c->children.push_back(std::move(expr2));
      c->children.push_back(std::move(expr1));
      c->children.push_back(std::move(expr3));
      JINJA_ASSIGN_OR_RETURN(expr1, Finish(std::move(c)));
    }
    return expr1;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (SkipName("or")) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      JINJA_ASSIGN_OR_RETURN(left,
                             Binary(Expr::Kind::kOr, "or", std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    JINJA_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (SkipName("and")) {
      JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      JINJA_ASSIGN_OR_RETURN(left,
                             Binary(Expr::Kind::kAnd, "and", std::move(left), std::move(right)));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      Nest nest(this);
      if (nest.too_deep()) return Fail("expression nested too deeply");
      const int line = cur().line;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      ExprPtr e = NewExpr(Expr::Kind::kUnary, line);
      e->name = "not";
      e->children.push_back(std::move(operand));
      return Finish(std::move(e));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    JINJA_ASSIGN_OR_RETURN(ExprPtr expr, ParseMath1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Token::Type::kOperator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        Next();
      } else if (SkipName("in")) {
        op = "in";
      } else if (IsName("not") && peek().type == Token::Type::kName && peek().text == "in") {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      JINJA_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      if (!cmp) {
        cmp = NewExpr(Expr::Kind::kCompare, expr->line);
        cmp->children.push_back(std::move(expr));
      }
      cmp->ops.push_back(op);
      cmp->children.push_back(std::move(right));
      if (cmp->children.size() > static_cast<size_t>(kMaxExprDepth)) {
        return Fail("expression nested too deeply");
      }
    }
    if (!cmp) return expr;
    return Finish(std::move(cmp));
  }

  absl::StatusOr<ExprPtr> ParseBinaryLevel(std::initializer_list<std::string_view> ops,
                                           absl::StatusOr<ExprPtr> (Parser::*next)()) {
    JINJA_ASSIGN_OR_RETURN(ExprPtr left, (this->*next)());
    while (cur().type == Token::Type::kOperator &&
           std::find(ops.begin(), ops.end(), cur().text) != ops.end()) {
      std::string op = cur().text;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr right, (this->*next)());
      JINJA_ASSIGN_OR_RETURN(left,
                             Binary(Expr::Kind::kBinary, op, std::move(left), std::move(right)));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel({"+", "-"}, &Parser::ParseConcat);
  }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseBinaryLevel({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &Parser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    return ParseBinaryLevel({"**"}, &Parser::ParseUnaryFiltered);
  }
  absl::StatusOr<ExprPtr> ParseUnaryFiltered() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    Nest nest(this);
    if (nest.too_deep()) return Fail("expression nested too deeply");
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = NewExpr(Expr::Kind::kUnary, cur().line);
      node->name = cur().text;
      Next();
      JINJA_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->children.push_back(std::move(operand));
      JINJA_ASSIGN_OR_RETURN(node, Finish(std::move(node)));
    } else {
      JINJA_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    JINJA_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      JINJA_ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    Nest nest(this);
    if (nest.too_deep()) return Fail("expression nested too deeply");
    const Token& t = cur();
    ExprPtr node = NewExpr(Expr::Kind::kConst, t.line);
    switch (t.type) {
      case Token::Type::kName:
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          node->value = Value::Bool(t.text[0] == 't' || t.text[0] == 'T');
        } else if (t.text == "none" || t.text == "None") {
          node->value = Value::None();
        } else {
          node->kind = Expr::Kind::kName;
          node->name = t.text;
        }
        Next();
        return node;
      case Token::Type::kString: {
        std::string s;
        while (cur().type == Token::Type::kString) {
          s += cur().text;
          Next();
        }
        node->value = Value::String(std::move(s));
        return node;
      }
      case Token::Type::kInt:
        node->value = Value::Int(t.int_value);
        Next();
        return node;
      case Token::Type::kFloat:
        node->value = Value::Float(t.float_value);
        Next();
        return node;
      case Token::Type::kOperator:
        if (t.text == "(") {
          Next();
          JINJA_ASSIGN_OR_RETURN(node, ParseTuple(false, true, {}, true));
          JINJA_RETURN_IF_ERROR(ExpectOp(")"));
          return node;
        }
        if (t.text == "[") {
          Next();
          node->kind = Expr::Kind::kList;
          while (!IsOp("]")) {
            if (!node->children.empty()) JINJA_RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("]")) break;
            JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
            node->children.push_back(std::move(item));
          }
          JINJA_RETURN_IF_ERROR(ExpectOp("]"));
          return Finish(std::move(node));
        }
        if (t.text == "{") {
          Next();
          node->kind = Expr::Kind::kDict;
          while (!IsOp("}")) {
            if (!node->children.empty()) JINJA_RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("}")) break;
            JINJA_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
            JINJA_RETURN_IF_ERROR(ExpectOp(":"));
            JINJA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
            node->children.push_back(std::move(key));
            node->children.push_back(std::move(item));
          }
          JINJA_RETURN_IF_ERROR(ExpectOp("}"));
          return Finish(std::move(node));
        }
        break;
      default:
        break;
    }
    return Fail(Cat("unexpected '", Describe(t), "'"));
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".") || IsOp("[")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseFilter(std::move(node), false));
      } else if (IsName("is")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        JINJA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node) {
    const int line = cur().line;
    if (SkipOp(".")) {
      if (cur().type == Token::Type::kName) {
        ExprPtr e = NewExpr(Expr::Kind::kGetattr, line);
        e->name = cur().text;
        e->children.push_back(std::move(node));
        Next();
        return Finish(std::move(e));
      }
      if (cur().type != Token::Type::kInt) return Fail("expected name or number");
      ExprPtr index = NewExpr(Expr::Kind::kConst, line);
      index->value = Value::Int(cur().int_value);
      Next();
      ExprPtr e = NewExpr(Expr::Kind::kGetitem, line);
      e->children.push_back(std::move(node));
      e->children.push_back(std::move(index));
      return Finish(std::move(e));
    }
    JINJA_RETURN_IF_ERROR(ExpectOp("["));
    std::vector<ExprPtr> args;
    ExprPtr slice;
    while (!IsOp("]")) {
      if (!args.empty() || slice) JINJA_RETURN_IF_ERROR(ExpectOp(","));
      if (slice) return Fail("slices inside a tuple subscript are not supported");
      ExprPtr start;
      if (!IsOp(":")) {
        JINJA_ASSIGN_OR_RETURN(start, ParseExpression(true));
        if (!IsOp(":")) {
          args.push_back(std::move(start));
          continue;
        }
      }
      Next();  // the first ':'
      if (!args.empty()) return Fail("slices inside a tuple subscript are not supported");
      slice = NewExpr(Expr::Kind::kSlice, line);
      slice->children.push_back(std::move(node));
      slice->children.push_back(std::move(start));
      ExprPtr stop, step;
      if (!IsOp(":") && !IsOp("]") && !IsOp(",")) {
        JINJA_ASSIGN_OR_RETURN(stop, ParseExpression(true));
      }
      if (SkipOp(":") && !IsOp("]") && !IsOp(",")) {
        JINJA_ASSIGN_OR_RETURN(step, ParseExpression(true));
      }
      slice->children.push_back(std::move(stop));
      slice->children.push_back(std::move(step));
    }
    JINJA_RETURN_IF_ERROR(ExpectOp("]"));
    if (slice) return Finish(std::move(slice));
    if (args.empty()) return Fail("expected an expression in the subscript");
    ExprPtr e = NewExpr(Expr::Kind::kGetitem, line);
    e->children.push_back(std::move(node));
    if (args.size() == 1) {
      e->children.push_back(std::move(args[0]));
    } else {
      ExprPtr t = NewExpr(Expr::Kind::kTuple, line);
      t->children = std::move(args);
      JINJA_ASSIGN_OR_RETURN(t, Finish(std::move(t)));
      e->children.push_back(std::move(t));
    }
    return Finish(std::move(e));
  }

  // Arguments in parentheses, into e->children (after what is there) and e->kwargs.
  absl::Status ParseCallArgs(Expr* e) {
    JINJA_RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) {
        JINJA_RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp(")")) break;
      }
      first = false;
      if (IsOp("*") || IsOp("**")) return Fail("*args and **kwargs in calls are not supported");
      if (cur().type == Token::Type::kName && peek().type == Token::Type::kOperator &&
          peek().text == "=") {
        std::string key = cur().text;
        for (const auto& [k, v] : e->kwargs) {
          if (k == key) return Fail(Cat("keyword argument repeated: ", key));
        }
        Next();
        Next();
        JINJA_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        e->kwargs.emplace_back(std::move(key), std::move(v));
      } else {
        if (!e->kwargs.empty()) return Fail("invalid syntax for function call expression");
        JINJA_ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        e->children.push_back(std::move(v));
      }
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr node) {
    ExprPtr e = NewExpr(Expr::Kind::kCall, node->line);
    e->children.push_back(std::move(node));
    JINJA_RETURN_IF_ERROR(ParseCallArgs(e.get()));
    return Finish(std::move(e));
  }

  absl::StatusOr<std::string> ParseDottedName() {
    JINJA_ASSIGN_OR_RETURN(std::string name, ExpectName());
    while (SkipOp(".")) {
      JINJA_ASSIGN_OR_RETURN(std::string part, ExpectName());
      CatTo(&name, ".", part);
    }
    return name;
  }

  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node, bool start_inline) {
    while (IsOp("|") || start_inline) {
      if (!start_inline) Next();
      start_inline = false;
      const int line = cur().line;
      JINJA_ASSIGN_OR_RETURN(std::string name, ParseDottedName());
      ExprPtr e = NewExpr(Expr::Kind::kFilter, line);
      e->name = std::move(name);
      e->children.push_back(std::move(node));
      if (IsOp("(")) JINJA_RETURN_IF_ERROR(ParseCallArgs(e.get()));
      JINJA_ASSIGN_OR_RETURN(node, Finish(std::move(e)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    const int line = cur().line;
    Next();  // is
    const bool negated = SkipName("not");
    JINJA_ASSIGN_OR_RETURN(std::string name, ParseDottedName());
    ExprPtr e = NewExpr(Expr::Kind::kTest, line);
    e->name = std::move(name);
    e->children.push_back(std::move(node));
    const Token& t = cur();
    if (IsOp("(")) {
      JINJA_RETURN_IF_ERROR(ParseCallArgs(e.get()));
    } else if ((t.type == Token::Type::kName || t.type == Token::Type::kString ||
                t.type == Token::Type::kInt || t.type == Token::Type::kFloat || IsOp("[") ||
                IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) return Fail("You cannot chain multiple tests with is");
      JINJA_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
      JINJA_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
      e->children.push_back(std::move(arg));
    }
    JINJA_ASSIGN_OR_RETURN(e, Finish(std::move(e)));
    if (!negated) return e;
    ExprPtr n = NewExpr(Expr::Kind::kUnary, line);
    n->name = "not";
    n->children.push_back(std::move(e));
    return Finish(std::move(n));
  }

  const std::vector<Token>& t_;
  size_t pos_ = 0;
  int nesting_ = 0;
  int loop_depth_ = 0;
};

// Whether Jinja2's optimizer can fold e at compile time (literals and the
// operators, subscripts and inline ifs over them).
bool IsConstant(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kConst:
      return true;
    case Expr::Kind::kList:
    case Expr::Kind::kTuple:
    case Expr::Kind::kDict:
    case Expr::Kind::kUnary:
    case Expr::Kind::kBinary:
    case Expr::Kind::kAnd:
    case Expr::Kind::kOr:
    case Expr::Kind::kCompare:
    case Expr::Kind::kGetattr:
    case Expr::Kind::kGetitem:
    case Expr::Kind::kSlice:
    case Expr::Kind::kCondExpr:
      for (const auto& c : e.children) {
        if (c && !IsConstant(*c)) return false;
      }
      return true;
    default:
      return false;
  }
}

// Jinja2 slices with Python's obj[a:b:c], which fails on a number, None or a
// dict, except where the optimizer folded a constant expression with the
// sandbox's getitem (an undefined value instead): the whole of a `{{ }}`, or
// a constant part whose value is a string or a bool (`~`, comparisons, not).
// Marks such slices (value = true) for the interpreter.
void MarkFoldedSlices(Expr* e, bool folded) {
  if (e == nullptr) return;
  if (!folded && IsConstant(*e) &&
      ((e->kind == Expr::Kind::kBinary && e->name == "~") || e->kind == Expr::Kind::kCompare ||
       (e->kind == Expr::Kind::kUnary && e->name == "not"))) {
    folded = true;
  }
  if (folded && e->kind == Expr::Kind::kSlice) e->value = Value::Bool(true);
  for (auto& c : e->children) MarkFoldedSlices(c.get(), folded);
  for (auto& [k, c] : e->kwargs) MarkFoldedSlices(c.get(), folded);
}

void MarkFoldedSlices(Body& body) {
  for (StmtPtr& s : body) {
    const bool print_root = s->kind == Stmt::Kind::kPrint && s->expr && IsConstant(*s->expr);
    MarkFoldedSlices(s->expr.get(), print_root);
    MarkFoldedSlices(s->target.get(), false);
    MarkFoldedSlices(s->filter.get(), false);
    for (auto& c : s->conditions) MarkFoldedSlices(c.get(), false);
    for (auto& d : s->defaults) MarkFoldedSlices(d.get(), false);
    for (Body& b : s->bodies) MarkFoldedSlices(b);
    MarkFoldedSlices(s->else_body);
  }
}

// Jinja2 (3.0+) fails at compile time on an unknown filter or test, except
// inside an `if` statement or an inline if-expression (a "soft" frame), where
// it fails only if evaluated; loops, macros and set and filter blocks start a
// new frame that is not soft.
absl::Status CheckNames(const Expr* e, bool soft) {
  if (e == nullptr) return absl::OkStatus();
  if (e->kind == Expr::Kind::kCondExpr) soft = true;
  if (!soft && e->kind == Expr::Kind::kFilter && !IsKnownFilter(e->name)) {
    return absl::InvalidArgumentError(
        Cat("TemplateAssertionError: No filter named '", e->name, "'. (line ", e->line, ")"));
  }
  if (!soft && e->kind == Expr::Kind::kTest && !IsKnownTest(e->name)) {
    return absl::InvalidArgumentError(
        Cat("TemplateAssertionError: No test named '", e->name, "'. (line ", e->line, ")"));
  }
  for (const auto& c : e->children) JINJA_RETURN_IF_ERROR(CheckNames(c.get(), soft));
  for (const auto& [k, c] : e->kwargs) JINJA_RETURN_IF_ERROR(CheckNames(c.get(), soft));
  return absl::OkStatus();
}

absl::Status CheckNames(const Body& body, bool soft) {
  for (const StmtPtr& s : body) {
    switch (s->kind) {
      case Stmt::Kind::kIf:
        for (const auto& c : s->conditions) JINJA_RETURN_IF_ERROR(CheckNames(c.get(), true));
        for (const Body& b : s->bodies) JINJA_RETURN_IF_ERROR(CheckNames(b, true));
        JINJA_RETURN_IF_ERROR(CheckNames(s->else_body, true));
        break;
      case Stmt::Kind::kFor:
        JINJA_RETURN_IF_ERROR(CheckNames(s->expr.get(), soft));
        JINJA_RETURN_IF_ERROR(CheckNames(s->filter.get(), false));
        JINJA_RETURN_IF_ERROR(CheckNames(s->bodies[0], false));
        JINJA_RETURN_IF_ERROR(CheckNames(s->else_body, false));
        break;
      case Stmt::Kind::kPrint:
      case Stmt::Kind::kSet:
        JINJA_RETURN_IF_ERROR(CheckNames(s->expr.get(), soft));
        break;
      case Stmt::Kind::kSetBlock:
        JINJA_RETURN_IF_ERROR(CheckNames(s->filter.get(), false));
        JINJA_RETURN_IF_ERROR(CheckNames(s->bodies[0], false));
        break;
      case Stmt::Kind::kFilterBlock:
        JINJA_RETURN_IF_ERROR(CheckNames(s->expr.get(), false));
        JINJA_RETURN_IF_ERROR(CheckNames(s->bodies[0], false));
        break;
      case Stmt::Kind::kMacro:
        for (const auto& d : s->defaults) JINJA_RETURN_IF_ERROR(CheckNames(d.get(), false));
        JINJA_RETURN_IF_ERROR(CheckNames(s->bodies[0], false));
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens) {
  JINJA_ASSIGN_OR_RETURN(Body body, Parser(tokens).ParseTemplate());
  JINJA_RETURN_IF_ERROR(CheckNames(body, false));
  MarkFoldedSlices(body);
  return body;
}

}  // namespace jinja
