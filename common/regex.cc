#include "common/regex.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/unicode.h"

namespace shift {
namespace {

constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();
// Bounded counts are expanded into copies of the body; cap the blow-up.
constexpr uint32_t kMaxCount = 1000;
// Recursion frames for one match attempt; only repetitions of multi-codepoint
// groups grow with the input, and those are cut off here.
constexpr int kMaxDepth = 10000;
constexpr int kMaxGroupDepth = 256;

uint32_t Bit(UnicodeProperty p) { return 1u << static_cast<int>(p); }

// Parse tree; compiled into Regex::Node by RegexCompiler.
struct Ast {
  enum Kind { kEmpty, kChar, kClass, kAny, kBegin, kEnd, kConcat, kAlt, kRepeat, kLook };
  Kind kind = kEmpty;
  char32_t cp = 0;
  int cls = -1;
  uint32_t min = 0, max = 0;
  bool negate = false;
  std::vector<Ast> children;

  static Ast Of(Kind kind) {
    Ast ast;
    ast.kind = kind;
    return ast;
  }
};

std::optional<uint32_t> PropertyMask(std::u32string_view name) {
  using P = UnicodeProperty;
  static constexpr std::pair<std::u32string_view, uint32_t> kNames[] = {
      {U"L", 1u << static_cast<int>(P::kLetter)},
      {U"Letter", 1u << static_cast<int>(P::kLetter)},
      {U"M", 1u << static_cast<int>(P::kMark)},
      {U"Mark", 1u << static_cast<int>(P::kMark)},
      {U"N", 1u << static_cast<int>(P::kNumber)},
      {U"Number", 1u << static_cast<int>(P::kNumber)},
      {U"Nd", 1u << static_cast<int>(P::kDecimalNumber)},
      {U"Decimal_Number", 1u << static_cast<int>(P::kDecimalNumber)},
      {U"P", 1u << static_cast<int>(P::kPunctuation)},
      {U"Punctuation", 1u << static_cast<int>(P::kPunctuation)},
      {U"Pc", 1u << static_cast<int>(P::kConnectorPunctuation)},
      {U"Connector_Punctuation", 1u << static_cast<int>(P::kConnectorPunctuation)},
      {U"S", 1u << static_cast<int>(P::kSymbol)},
      {U"Symbol", 1u << static_cast<int>(P::kSymbol)},
      {U"Z", 1u << static_cast<int>(P::kSeparator)},
      {U"Separator", 1u << static_cast<int>(P::kSeparator)},
      {U"White_Space", 1u << static_cast<int>(P::kWhiteSpace)},
  };
  for (const auto& [n, mask] : kNames) {
    if (n == name) return mask;
  }
  return std::nullopt;
}

bool IsAsciiLetter(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char32_t SwapAsciiCase(char32_t c) { return c ^ 0x20; }

int HexValue(char32_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool Regex::CharClass::ContainsSlow(char32_t cp) const {
  bool in = false;
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](char32_t c, const auto& r) { return c < r.first; });
  if (it != ranges.begin() && cp <= std::prev(it)->second) in = true;
  for (size_t i = 0; !in && i < properties.size(); ++i) {
    bool has = false;
    for (uint32_t mask = properties[i].mask; mask != 0 && !has; mask &= mask - 1) {
      has = HasProperty(cp, static_cast<UnicodeProperty>(__builtin_ctz(mask)));
    }
    in = has != properties[i].negated;
  }
  return in != negated;
}

// Recursive-descent parser from pattern codepoints to an Ast, then a compiler
// from the Ast to the node graph of a Regex.
class RegexCompiler {
 public:
  explicit RegexCompiler(Regex* re) : re_(*re) {}

  absl::Status Run() {
    std::string_view bytes = re_.pattern_;
    while (!bytes.empty()) {
      const Utf8Step step = DecodeUtf8(bytes);
      if (step.kind != Utf8Step::kOk) {
        return absl::InvalidArgumentError(absl::StrCat("regex pattern is not valid UTF-8 at byte ",
                                                       re_.pattern_.size() - bytes.size()));
      }
      pattern_.push_back(step.cp);
      bytes.remove_prefix(step.length);
    }
    SHIFT_ASSIGN_OR_RETURN(Ast ast, ParseAlt());
    if (pos_ < pattern_.size()) return Error("unmatched ')'");
    re_.start_ = Emit(ast, Add(Node::kMatch));
    std::vector<bool> visited(re_.nodes_.size());
    AddFirst(re_.start_, &visited);
    return absl::OkStatus();
  }

 private:
  using Node = Regex::Node;

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("regex: ", std::string(what),
                                                   " at codepoint offset ", pos_, " of pattern \"",
                                                   re_.pattern_, "\""));
  }
  bool AtEnd() const { return pos_ >= pattern_.size(); }
  char32_t Peek() const { return pattern_[pos_]; }
  bool Consume(char32_t c) {
    if (AtEnd() || Peek() != c) return false;
    ++pos_;
    return true;
  }

  absl::StatusOr<Ast> ParseAlt() {
    Ast alt = Ast::Of(Ast::kAlt);
    do {
      SHIFT_ASSIGN_OR_RETURN(Ast branch, ParseConcat());
      alt.children.push_back(std::move(branch));
    } while (Consume('|'));
    if (alt.children.size() == 1) return std::move(alt.children[0]);
    return alt;
  }

  absl::StatusOr<Ast> ParseConcat() {
    Ast concat = Ast::Of(Ast::kConcat);
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      SHIFT_ASSIGN_OR_RETURN(Ast atom, ParseAtom());
      SHIFT_ASSIGN_OR_RETURN(Ast repeated, ParseQuantifiers(std::move(atom)));
      concat.children.push_back(std::move(repeated));
    }
    if (concat.children.size() == 1) return std::move(concat.children[0]);
    return concat;
  }

  // Reads `{n}`, `{n,}` or `{n,m}` at pos_ (which is at '{'). As in
  // Oniguruma, a brace that does not form an interval is a literal.
  bool ParseInterval(uint32_t* min, uint32_t* max) {
    size_t p = pos_ + 1;
    auto number = [&](uint32_t* out) {
      size_t begin = p;
      uint64_t v = 0;
      while (p < pattern_.size() && pattern_[p] >= '0' && pattern_[p] <= '9') {
        v = std::min<uint64_t>(v * 10 + (pattern_[p] - '0'), kUnbounded - 1);
        ++p;
      }
      *out = static_cast<uint32_t>(v);
      return p > begin;
    };
    if (!number(min)) return false;
    *max = *min;
    if (p < pattern_.size() && pattern_[p] == ',') {
      ++p;
      if (!number(max)) *max = kUnbounded;
    }
    if (p >= pattern_.size() || pattern_[p] != '}') return false;
    pos_ = p + 1;
    return true;
  }

  absl::StatusOr<Ast> ParseQuantifiers(Ast atom) {
    while (!AtEnd()) {
      uint32_t min, max;
      const char32_t c = Peek();
      if (c == '*') {
        min = 0, max = kUnbounded, ++pos_;
      } else if (c == '+') {
        min = 1, max = kUnbounded, ++pos_;
      } else if (c == '?') {
        min = 0, max = 1, ++pos_;
      } else if (c != '{' || !ParseInterval(&min, &max)) {
        break;
      }
      if (min > max || (max != kUnbounded && max > kMaxCount) || min > kMaxCount) {
        return Error("repetition count out of range");
      }
      if (!AtEnd() && (Peek() == '?' || Peek() == '+')) {
        return Error("lazy or possessive quantifiers are not supported");
      }
      if (atom.kind == Ast::kBegin || atom.kind == Ast::kEnd || atom.kind == Ast::kLook) {
        return Error("quantifier on an anchor or lookahead");
      }
      Ast repeat = Ast::Of(Ast::kRepeat);
      repeat.min = min;
      repeat.max = max;
      repeat.children.push_back(std::move(atom));
      atom = std::move(repeat);
    }
    return atom;
  }

  absl::StatusOr<Ast> ParseAtom() {
    const char32_t c = Peek();
    ++pos_;
    switch (c) {
      case '(':
        return ParseGroup();
      case '[':
        return ParseClass();
      case '.':
        return Ast::Of(Ast::kAny);
      case '^':
        return Ast::Of(Ast::kBegin);
      case '$':
        return Ast::Of(Ast::kEnd);
      case '*':
      case '+':
      case '?':
        --pos_;
        return Error("quantifier without an operand");
      case '\\':
        return ParseEscape();
      default:
        return Literal(c);
    }
  }

  absl::StatusOr<Ast> ParseGroup() {
    // Parsing, emitting and freeing recurse per level: a bound keeps a
    // hostile pattern from overflowing the stack.
    if (++group_depth_ > kMaxGroupDepth) {
      return Error(absl::StrCat("groups nested deeper than ", kMaxGroupDepth));
    }
    struct Leave {
      int* depth;
      ~Leave() { --*depth; }
    } leave{&group_depth_};
    const bool saved_ci = case_insensitive_;
    std::optional<bool> look_negate;
    if (Consume('?')) {
      if (Consume(':')) {
      } else if (Consume('=')) {
        look_negate = false;
      } else if (Consume('!')) {
        look_negate = true;
      } else if (Consume('i')) {
        if (!Consume(':')) return Error("only (?i:...) groups are supported");
        case_insensitive_ = true;
      } else if (Consume('-')) {
        if (!Consume('i') || !Consume(':')) return Error("only (?-i:...) groups are supported");
        case_insensitive_ = false;
      } else {
        return Error("unsupported group syntax");
      }
    }
    SHIFT_ASSIGN_OR_RETURN(Ast inner, ParseAlt());
    if (!Consume(')')) return Error("missing ')'");
    case_insensitive_ = saved_ci;
    if (!look_negate) return inner;
    Ast look = Ast::Of(Ast::kLook);
    look.negate = *look_negate;
    look.children.push_back(std::move(inner));
    return look;
  }

  Ast Literal(char32_t c) {
    if (!case_insensitive_ || !IsAsciiLetter(c)) {
      Ast ast = Ast::Of(Ast::kChar);
      ast.cp = c;
      return ast;
    }
    Regex::CharClass cls;
    cls.ranges = {{c, c}, {SwapAsciiCase(c), SwapAsciiCase(c)}};
    return ClassAst(std::move(cls));
  }

  // An escape that is one codepoint (\n, \x41, \., ...) or a class (\s, \p{L}).
  struct Escape {
    std::optional<char32_t> cp;
    Regex::CharClass::PropertyTest property{0, false};

    static Escape Char(char32_t c) { return {c, {0, false}}; }
    static Escape Property(uint32_t mask, bool negated) { return {std::nullopt, {mask, negated}}; }
  };

  absl::StatusOr<Escape> ParseEscapeBody() {
    if (AtEnd()) return Error("trailing backslash");
    const char32_t c = Peek();
    ++pos_;
    using P = UnicodeProperty;
    const uint32_t word =
        Bit(P::kLetter) | Bit(P::kMark) | Bit(P::kDecimalNumber) | Bit(P::kConnectorPunctuation);
    switch (c) {
      case 'n':
        return Escape::Char(U'\n');
      case 'r':
        return Escape::Char(U'\r');
      case 't':
        return Escape::Char(U'\t');
      case 'f':
        return Escape::Char(U'\f');
      case 'v':
        return Escape::Char(U'\v');
      case 'e':
        return Escape::Char(0x1B);
      case 's':
        return Escape::Property(Bit(P::kWhiteSpace), false);
      case 'S':
        return Escape::Property(Bit(P::kWhiteSpace), true);
      case 'd':
        return Escape::Property(Bit(P::kDecimalNumber), false);
      case 'D':
        return Escape::Property(Bit(P::kDecimalNumber), true);
      case 'w':
        return Escape::Property(word, false);
      case 'W':
        return Escape::Property(word, true);
      case 'p':
      case 'P': {
        if (!Consume('{')) return Error("expected '{' after \\p");
        bool negated = c == 'P';
        if (Consume('^')) negated = !negated;
        const size_t begin = pos_;
        while (!AtEnd() && Peek() != '}') ++pos_;
        if (AtEnd()) return Error("missing '}' in \\p{...}");
        const auto mask = PropertyMask(std::u32string_view(pattern_).substr(begin, pos_ - begin));
        if (!mask) return Error("unknown Unicode property");
        ++pos_;
        return Escape::Property(*mask, negated);
      }
      case 'x':
      case 'u': {
        const bool braced = c == 'x' && Consume('{');
        const size_t max_digits = braced ? 8 : (c == 'x' ? 2 : 4);
        char32_t v = 0;
        size_t digits = 0;
        while (!AtEnd() && digits < max_digits && HexValue(Peek()) >= 0) {
          v = v * 16 + HexValue(Peek());
          ++pos_, ++digits;
        }
        if (digits == 0 || (c == 'u' && digits != 4) || (braced && !Consume('}'))) {
          return Error("malformed hexadecimal escape");
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
          return Error("escape is not a scalar value");
        return Escape::Char(v);
      }
      default:
        // Escaped punctuation stands for itself; escaped letters and digits
        // are features (\b, \1, \k, ...) this engine does not have.
        if (c < 128 && (IsAsciiLetter(c) || (c >= '0' && c <= '9'))) {
          --pos_;
          return Error("unsupported escape");
        }
        return Escape::Char(c);
    }
  }

  absl::StatusOr<Ast> ParseEscape() {
    if (Consume('A')) return Ast::Of(Ast::kBegin);
    if (Consume('z')) return Ast::Of(Ast::kEnd);
    SHIFT_ASSIGN_OR_RETURN(Escape e, ParseEscapeBody());
    if (e.cp) return Literal(*e.cp);
    Regex::CharClass cls;
    cls.properties.push_back(e.property);
    return ClassAst(std::move(cls));
  }

  absl::StatusOr<Ast> ParseClass() {
    Regex::CharClass cls;
    cls.negated = Consume('^');
    bool first = true;
    while (true) {
      if (AtEnd()) return Error("missing ']'");
      if (Peek() == ']' && !first) break;
      if (Peek() == '[') return Error("nested classes are not supported");
      first = false;
      SHIFT_ASSIGN_OR_RETURN(std::optional<char32_t> lo, ParseClassAtom(&cls));
      if (!lo) continue;
      char32_t hi = *lo;
      if (pos_ + 1 < pattern_.size() && Peek() == '-' && pattern_[pos_ + 1] != ']') {
        ++pos_;
        SHIFT_ASSIGN_OR_RETURN(std::optional<char32_t> end, ParseClassAtom(&cls));
        if (!end || *end < *lo) return Error("invalid range in class");
        hi = *end;
      }
      cls.ranges.emplace_back(*lo, hi);
    }
    ++pos_;  // ']'
    return ClassAst(std::move(cls));
  }

  // One class member: returns the codepoint, or nullopt after adding a
  // property test (\s, \p{L}) to `cls`.
  absl::StatusOr<std::optional<char32_t>> ParseClassAtom(Regex::CharClass* cls) {
    const char32_t c = Peek();
    ++pos_;
    if (c != '\\') return std::optional<char32_t>(c);
    SHIFT_ASSIGN_OR_RETURN(Escape e, ParseEscapeBody());
    if (e.cp) return e.cp;
    cls->properties.push_back(e.property);
    return std::optional<char32_t>();
  }

  Ast ClassAst(Regex::CharClass cls) {
    Ast ast = Ast::Of(Ast::kClass);
    ast.cls = AddClass(std::move(cls));
    return ast;
  }

  // Sorts and merges ranges (adding the other ASCII case under (?i)) and
  // precomputes ASCII membership.
  int AddClass(Regex::CharClass cls) {
    if (case_insensitive_) {
      const size_t n = cls.ranges.size();
      for (size_t i = 0; i < n; ++i) {
        for (char32_t c = cls.ranges[i].first; c <= std::min<char32_t>(cls.ranges[i].second, 127);
             ++c) {
          if (IsAsciiLetter(c)) cls.ranges.emplace_back(SwapAsciiCase(c), SwapAsciiCase(c));
        }
      }
    }
    std::sort(cls.ranges.begin(), cls.ranges.end());
    std::vector<std::pair<char32_t, char32_t>> merged;
    for (const auto& r : cls.ranges) {
      if (!merged.empty() && r.first <= merged.back().second + 1) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    cls.ranges = std::move(merged);
    for (char32_t c = 0; c < 128; ++c) {
      if (cls.ContainsSlow(c)) cls.ascii[c >> 6] |= uint64_t{1} << (c & 63);
    }
    re_.classes_.push_back(std::move(cls));
    return static_cast<int>(re_.classes_.size()) - 1;
  }

  // Appends a node; callers set further fields through re_.nodes_[index]
  // (not a reference kept across Add, which may reallocate).
  int Add(Node::Kind kind, int next = -1) {
    Node node;
    node.kind = kind;
    node.next = next;
    re_.nodes_.push_back(std::move(node));
    return static_cast<int>(re_.nodes_.size()) - 1;
  }

  // Emits `ast` followed by the continuation node `next`; returns its entry.
  int Emit(const Ast& ast, int next) {
    switch (ast.kind) {
      case Ast::kEmpty:
        return next;
      case Ast::kChar: {
        const int id = Add(Node::kChar, next);
        re_.nodes_[id].cp = ast.cp;
        return id;
      }
      case Ast::kClass: {
        const int id = Add(Node::kClass, next);
        re_.nodes_[id].cls = ast.cls;
        return id;
      }
      case Ast::kAny:
        return Add(Node::kAny, next);
      case Ast::kBegin:
        return Add(Node::kBegin, next);
      case Ast::kEnd:
        return Add(Node::kEnd, next);
      case Ast::kConcat:
        for (auto it = ast.children.rbegin(); it != ast.children.rend(); ++it) {
          next = Emit(*it, next);
        }
        return next;
      case Ast::kAlt: {
        std::vector<int> alts;
        for (const Ast& child : ast.children) alts.push_back(Emit(child, next));
        const int id = Add(Node::kAlt);
        re_.nodes_[id].alts = std::move(alts);
        return id;
      }
      case Ast::kLook: {
        const int body = Emit(ast.children[0], Add(Node::kAccept));
        const int id = Add(Node::kLook, next);
        re_.nodes_[id].body = body;
        re_.nodes_[id].negate = ast.negate;
        return id;
      }
      case Ast::kRepeat:
        return EmitRepeat(ast, next);
    }
    return next;
  }

  int EmitRepeat(const Ast& ast, int next) {
    const Ast& body = ast.children[0];
    if (body.kind == Ast::kChar || body.kind == Ast::kClass || body.kind == Ast::kAny) {
      const int single = Emit(body, -1);
      const int id = Add(Node::kRepeat, next);
      re_.nodes_[id].body = single;
      re_.nodes_[id].min = ast.min;
      re_.nodes_[id].max = ast.max;
      return id;
    }
    // General body: min mandatory copies, then either a guarded loop or
    // (max - min) nested optional copies.
    int tail = next;
    if (ast.max == kUnbounded) {
      const int loop_id = re_.num_loops_++;
      const int loop = Add(Node::kLoop, next);
      re_.nodes_[loop].loop = loop_id;
      const int body_entry = Emit(body, loop);
      re_.nodes_[loop].body = body_entry;
      tail = Add(Node::kLoopEntry, loop);
      re_.nodes_[tail].loop = loop_id;
    } else {
      for (uint32_t i = ast.min; i < ast.max; ++i) {
        const int once = Emit(body, tail);
        tail = Add(Node::kAlt);
        re_.nodes_[tail].alts = {once, next};
      }
    }
    for (uint32_t i = 0; i < ast.min; ++i) tail = Emit(body, tail);
    return tail;
  }

  // Adds to first_ascii_ every ASCII codepoint a match from `id` can start
  // with (conservatively: everything, where that is hard to know). The set is
  // a union, so each node needs visiting once, which also ends loops.
  void AddFirst(int id, std::vector<bool>* visited) {
    if ((*visited)[id]) return;
    (*visited)[id] = true;
    const Node& node = re_.nodes_[id];
    uint64_t* first = re_.first_ascii_;
    switch (node.kind) {
      case Node::kChar:
        if (node.cp < 128) first[node.cp >> 6] |= uint64_t{1} << (node.cp & 63);
        break;
      case Node::kClass:
        first[0] |= re_.classes_[node.cls].ascii[0];
        first[1] |= re_.classes_[node.cls].ascii[1];
        break;
      case Node::kAlt:
        for (const int alt : node.alts) AddFirst(alt, visited);
        break;
      case Node::kRepeat:
        AddFirst(node.body, visited);
        if (node.min == 0) AddFirst(node.next, visited);
        break;
      case Node::kLoop:
        AddFirst(node.body, visited);
        AddFirst(node.next, visited);
        break;
      case Node::kLoopEntry:
        AddFirst(node.next, visited);
        break;
      default:
        first[0] = first[1] = ~uint64_t{0};
        break;
    }
  }

  Regex& re_;
  std::u32string pattern_;
  size_t pos_ = 0;
  bool case_insensitive_ = false;
  int group_depth_ = 0;
};

absl::StatusOr<Regex> Regex::Compile(std::string_view pattern) {
  Regex re;
  re.pattern_ = std::string(pattern);
  RegexCompiler compiler(&re);
  SHIFT_RETURN_IF_ERROR(compiler.Run());
  return re;
}

// Backtracking over the node graph for one search; holds the decoded text.
class RegexMatcher {
 public:
  // Buffers reused across searches on one thread: pre-tokenization runs many
  // searches over short pieces, where allocation would dominate.
  struct Scratch {
    std::vector<char32_t> cps;
    std::vector<size_t> offsets;  // byte offset of each codepoint, plus the end
    std::vector<size_t> loop_pos;
  };

  RegexMatcher(const Regex& re, std::string_view text, Scratch* scratch)
      : re_(re), cps_(scratch->cps), offsets_(scratch->offsets), loop_pos_(scratch->loop_pos) {
    cps_.clear();
    offsets_.clear();
    size_t pos = 0;
    while (pos < text.size()) {
      offsets_.push_back(pos);
      const auto b = static_cast<unsigned char>(text[pos]);
      if (b < 0x80) {
        cps_.push_back(b);
        ++pos;
        continue;
      }
      const Utf8Step step = DecodeUtf8(text.substr(pos));
      cps_.push_back(step.kind == Utf8Step::kOk ? step.cp : 0xFFFD);
      pos += step.length;
    }
    offsets_.push_back(text.size());
    loop_pos_.assign(re.num_loops_, kNoPos);
  }

  // Fails when the search takes more than kStepsPerCodepoint steps per
  // codepoint of the text (plus kBaseSteps): a pattern that backtracks
  // catastrophically is an error, not a hang.
  absl::StatusOr<std::vector<Regex::Span>> FindAll() {
    std::vector<Regex::Span> out;
    const size_t n = cps_.size();
    budget_ = Regex::kBaseSteps + Regex::kStepsPerCodepoint * static_cast<int64_t>(n);
    size_t start = 0;
    while (start <= n) {
      size_t s = start;
      while (s <= n && !(CanStart(s) && Attempt(s))) ++s;
      if (budget_ < 0) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the pattern ", re_.pattern(), " took more than ",
                         Regex::kBaseSteps + Regex::kStepsPerCodepoint * static_cast<int64_t>(n),
                         " steps on ", n, " codepoints (catastrophic backtracking)"));
      }
      if (s > n) break;
      out.emplace_back(offsets_[s], offsets_[end_]);
      start = end_ > s ? end_ : s + 1;
    }
    return out;
  }

 private:
  using Node = Regex::Node;
  static constexpr size_t kNoPos = std::numeric_limits<size_t>::max();

  bool CanStart(size_t pos) const {
    if (pos == cps_.size() || cps_[pos] >= 128) return true;
    return (re_.first_ascii_[cps_[pos] >> 6] >> (cps_[pos] & 63)) & 1;
  }

  bool Attempt(size_t pos) {
    depth_ = 0;
    return Run(re_.start_, pos);
  }

  bool Run(int id, size_t pos) {
    if (depth_ >= kMaxDepth || --budget_ < 0) return false;
    ++depth_;
    const bool matched = Step(id, pos);
    --depth_;
    return matched;
  }

  bool Step(int id, size_t pos) {
    const size_t n = cps_.size();
    while (true) {
      const Node& node = re_.nodes_[id];
      switch (node.kind) {
        case Node::kChar:
        case Node::kClass:
        case Node::kAny:
          if (pos >= n || !re_.MatchesOne(node, cps_[pos])) return false;
          ++pos;
          break;
        case Node::kBegin:
          if (pos != 0) return false;
          break;
        case Node::kEnd:
          if (pos != n) return false;
          break;
        case Node::kAlt:
          for (size_t i = 0; i + 1 < node.alts.size(); ++i) {
            if (Run(node.alts[i], pos)) return true;
          }
          id = node.alts.back();
          continue;
        case Node::kRepeat: {
          const Node& body = re_.nodes_[node.body];
          const size_t limit = std::min<size_t>(n - pos, node.max);
          size_t count = 0;
          while (count < limit && re_.MatchesOne(body, cps_[pos + count])) ++count;
          if (count < node.min) return false;
          for (; count > node.min; --count) {
            if (Run(node.next, pos + count)) return true;
          }
          pos += node.min;
          break;
        }
        case Node::kLoopEntry: {
          const size_t saved = loop_pos_[node.loop];
          loop_pos_[node.loop] = kNoPos;
          const bool matched = Run(node.next, pos);
          loop_pos_[node.loop] = saved;
          return matched;
        }
        case Node::kLoop: {
          // An iteration that consumed nothing would loop forever; like
          // Oniguruma, such an iteration ends the loop instead.
          const size_t saved = loop_pos_[node.loop];
          if (saved != pos) {
            loop_pos_[node.loop] = pos;
            if (Run(node.body, pos)) return true;
            loop_pos_[node.loop] = saved;
          }
          break;
        }
        case Node::kLook:
          if (Run(node.body, pos) == node.negate) return false;
          break;
        case Node::kAccept:
          return true;
        case Node::kMatch:
          end_ = pos;
          return true;
      }
      id = node.next;
    }
  }

  const Regex& re_;
  std::vector<char32_t>& cps_;
  std::vector<size_t>& offsets_;
  std::vector<size_t>& loop_pos_;
  size_t end_ = 0;
  int depth_ = 0;
  int64_t budget_ = 0;
};

absl::StatusOr<std::vector<Regex::Span>> Regex::FindAll(std::string_view text) const {
  thread_local RegexMatcher::Scratch scratch;
  return RegexMatcher(*this, text, &scratch).FindAll();
}

}  // namespace shift
