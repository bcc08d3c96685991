// Jinja2's lexer for the root, block, variable and comment states (see lexer.h).
#include "jinja/lexer.h"

#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "jinja/pystr.h"
#include "jinja/status_macros.h"
#include "jinja/value.h"

namespace jinja {
namespace {

absl::Status SyntaxError(std::string_view message, int line) {
  return absl::InvalidArgumentError(Cat("TemplateSyntaxError: ", message, " (line ", line, ")"));
}

// CRLF and CR become LF; one final newline is dropped.
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Length of the run of Python whitespace (regex \s*) at pos.
size_t WhitespaceRun(std::string_view s, size_t pos) {
  size_t end = pos;
  while (end < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[end]);
    if (c < 0x80) {
      if (!pystr::IsSpace(c)) break;
      ++end;
      continue;
    }
    size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (end + len > s.size()) break;
    const std::u32string cp = pystr::Decode(s.substr(end, len));
    if (cp.size() != 1 || !pystr::IsSpace(cp[0])) break;
    end += len;
  }
  return end - pos;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return absl::ascii_isalpha(c) || c == '_'; }
bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

// Digits with single underscores between them: (\d+_)*\d+. Returns the end.
size_t ScanDigits(std::string_view s, size_t pos) {
  if (pos >= s.size() || !IsDigit(s[pos])) return pos;
  size_t end = pos;
  while (end < s.size()) {
    if (IsDigit(s[end])) {
      ++end;
    } else if (s[end] == '_' && end + 1 < s.size() && IsDigit(s[end + 1])) {
      ++end;
    } else {
      break;
    }
  }
  return end;
}

// The float rule: digits then .digits and/or an exponent. Returns the end or pos.
size_t ScanFloat(std::string_view s, size_t pos) {
  if (pos > 0 && s[pos - 1] == '.') return pos;
  size_t end = ScanDigits(s, pos);
  if (end == pos) return pos;
  bool fraction = false;
  if (end + 1 < s.size() && s[end] == '.' && IsDigit(s[end + 1])) {
    end = ScanDigits(s, end + 1);
    fraction = true;
  }
  if (end < s.size() && (s[end] == 'e' || s[end] == 'E')) {
    size_t e = end + 1;
    if (e < s.size() && (s[e] == '+' || s[e] == '-')) ++e;
    const size_t after = ScanDigits(s, e);
    if (after > e) return after;
  }
  return fraction ? end : pos;
}

// The integer rule (0b, 0o, 0x, decimal). Returns the end or pos.
size_t ScanInt(std::string_view s, size_t pos, int64_t* value, bool* overflow) {
  auto accumulate = [&](std::string_view digits, int base) {
    int64_t v = 0;
    for (char c : digits) {
      if (c == '_') continue;
      const int d = IsDigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
      if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v)) {
        *overflow = true;
      }
    }
    *value = v;
  };
  if (pos + 1 < s.size() && s[pos] == '0') {
    const char p = absl::ascii_tolower(s[pos + 1]);
    int base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 0;
    if (base != 0) {
      size_t end = pos + 2;
      auto ok = [&](char c) {
        c = absl::ascii_tolower(c);
        return base == 16 ? absl::ascii_isxdigit(c) : (c >= '0' && c < '0' + base);
      };
      while (end < s.size()) {
        if (ok(s[end])) {
          ++end;
        } else if (s[end] == '_' && end + 1 < s.size() && ok(s[end + 1])) {
          end += 2;
        } else {
          break;
        }
      }
      if (end > pos + 2) {
        accumulate(s.substr(pos + 2, end - pos - 2), base);
        return end;
      }
    }
  }
  if (pos >= s.size() || !IsDigit(s[pos])) return pos;
  size_t end = pos + 1;
  if (s[pos] == '0') {
    while (end < s.size() &&
           (s[end] == '0' || (s[end] == '_' && end + 1 < s.size() && s[end + 1] == '0'))) {
      ++end;
    }
  } else {
    end = ScanDigits(s, pos);
  }
  accumulate(s.substr(pos, end - pos), 10);
  return end;
}

// A string literal's body with Python's unicode-escape decoding.
absl::StatusOr<std::string> DecodeString(std::string_view body, int line) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 >= body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    auto hex = [&](int digits) -> absl::StatusOr<char32_t> {
      char32_t v = 0;
      for (int k = 1; k <= digits; ++k) {
        if (i + k >= body.size() || !absl::ascii_isxdigit(body[i + k])) {
          return SyntaxError("truncated \\x, \\u or \\U escape in a string", line);
        }
        const char h = absl::ascii_tolower(body[i + k]);
        v = v * 16 + (IsDigit(h) ? h - '0' : h - 'a' + 10);
      }
      i += digits;
      if (v > 0x10FFFF) return SyntaxError("illegal Unicode character in a string", line);
      return v;
    };
    switch (c) {
      case '\n':
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x':
      case 'u':
      case 'U': {
        auto cp = hex(c == 'x' ? 2 : c == 'u' ? 4 : 8);
        if (!cp.ok()) return cp.status();
        pystr::AppendCodePoint(*cp, &out);
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          char32_t v = c - '0';
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
               ++k) {
            v = v * 8 + (body[++i] - '0');
          }
          pystr::AppendCodePoint(v, &out);
        } else {
          out.push_back('\\');
          out.push_back(c);
        }
    }
  }
  return out;
}

constexpr std::string_view kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                           "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                           ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view raw, const LexerOptions& options) {
  const std::string source = NormalizeNewlines(raw);
  const std::string_view s = source;
  std::vector<Token> tokens;
  size_t pos = 0;
  int line = 1;
  bool line_starting = true;
  auto emit = [&](Token::Type type, std::string text) {
    tokens.push_back(Token{type, std::move(text), 0, 0, line});
  };
  auto advance = [&](size_t to) {
    for (size_t k = pos; k < to; ++k) line += s[k] == '\n';
    pos = to;
  };
  while (pos < s.size()) {
    size_t at = s.find('{', pos);
    while (at != std::string_view::npos && at + 1 < s.size() && s[at + 1] != '{' &&
           s[at + 1] != '%' && s[at + 1] != '#') {
      at = s.find('{', at + 1);
    }
    if (at == std::string_view::npos || at + 1 >= s.size()) {
      emit(Token::Type::kData, std::string(s.substr(pos)));
      advance(s.size());
      break;
    }
    std::string text(s.substr(pos, at - pos));
    const char kind = s[at + 1];
    const char sign = at + 2 < s.size() && (s[at + 2] == '-' || s[at + 2] == '+') ? s[at + 2] : 0;
    if (sign == '-') {
      text = pystr::Strip(text, std::nullopt, false, true);
    } else if (sign != '+' && options.lstrip_blocks && kind != '{') {
      const size_t newline = text.rfind('\n');
      const size_t l_pos = newline == std::string::npos ? 0 : newline + 1;
      if ((l_pos > 0 || line_starting) &&
          text.find_first_not_of(" \t", l_pos) == std::string::npos) {
        text.resize(l_pos);
      }
    }
    if (!text.empty()) emit(Token::Type::kData, std::move(text));
    advance(at + 2 + (sign != 0 ? 1 : 0));
    line_starting = false;

    if (kind == '#') {
      const size_t end = s.find("#}", pos);
      if (end == std::string_view::npos) return SyntaxError("Missing end of comment tag", line);
      size_t after = end + 2;
      if (end > pos && s[end - 1] == '-') {
        after += WhitespaceRun(s, after);
      } else if (!(end > pos && s[end - 1] == '+') && options.trim_blocks && after < s.size() &&
                 s[after] == '\n') {
        ++after;
      }
      line_starting = s[after - 1] == '\n';
      advance(after);
      continue;
    }

    const bool block = kind == '%';
    emit(block ? Token::Type::kBlockBegin : Token::Type::kVarBegin, "");
    std::vector<char> balancing;
    while (true) {
      if (pos >= s.size()) {
        return SyntaxError(block ? "unexpected end of template, expected the end of a block tag"
                                 : "unexpected end of template, expected '}}'",
                           line);
      }
      if (balancing.empty()) {
        const std::string_view rest = s.substr(pos);
        size_t end = 0;
        if (block) {
          if (rest.starts_with("+%}")) {
            end = pos + 3;
          } else if (rest.starts_with("-%}")) {
            end = pos + 3 + WhitespaceRun(s, pos + 3);
          } else if (rest.starts_with("%}")) {
            end = pos + 2;
            if (options.trim_blocks && end < s.size() && s[end] == '\n') ++end;
          }
        } else if (rest.starts_with("-}}")) {
          end = pos + 3 + WhitespaceRun(s, pos + 3);
        } else if (rest.starts_with("}}")) {
          end = pos + 2;
        }
        if (end != 0) {
          emit(block ? Token::Type::kBlockEnd : Token::Type::kVarEnd, "");
          line_starting = s[end - 1] == '\n';
          advance(end);
          break;
        }
      }
      const char c = s[pos];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
        advance(pos + 1);
        continue;
      }
      if (const size_t end = ScanFloat(s, pos); end > pos) {
        std::string digits;
        for (char d : s.substr(pos, end - pos)) {
          if (d != '_') digits.push_back(d);
        }
        Token token{Token::Type::kFloat, digits, 0, std::strtod(digits.c_str(), nullptr), line};
        tokens.push_back(std::move(token));
        advance(end);
        continue;
      }
      int64_t int_value = 0;
      bool overflow = false;
      if (const size_t end = ScanInt(s, pos, &int_value, &overflow); end > pos) {
        if (overflow) return SyntaxError("integer literal too large (64 bits at most)", line);
        tokens.push_back(
            Token{Token::Type::kInt, std::string(s.substr(pos, end - pos)), int_value, 0, line});
        advance(end);
        continue;
      }
      if (IsNameStart(c)) {
        size_t end = pos + 1;
        while (end < s.size() && IsNameChar(s[end])) ++end;
        emit(Token::Type::kName, std::string(s.substr(pos, end - pos)));
        advance(end);
        continue;
      }
      if (c == '"' || c == '\'') {
        size_t end = pos + 1;
        while (end < s.size() && s[end] != c) end += s[end] == '\\' ? 2 : 1;
        if (end >= s.size())
          return SyntaxError("unexpected char '" + std::string(1, c) + "'", line);
        auto decoded = DecodeString(s.substr(pos + 1, end - pos - 1), line);
        if (!decoded.ok()) return decoded.status();
        emit(Token::Type::kString, *std::move(decoded));
        advance(end + 1);
        continue;
      }
      std::string_view op;
      for (std::string_view candidate : kOperators) {
        if (s.substr(pos).starts_with(candidate)) {
          op = candidate;
          break;
        }
      }
      if (op.empty()) {
        return SyntaxError(Cat("unexpected char ", StringRepr(std::string(1, c))), line);
      }
      if (op == "(" || op == "[" || op == "{") {
        balancing.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
      } else if (op == ")" || op == "]" || op == "}") {
        if (balancing.empty()) return SyntaxError(Cat("unexpected '", op, "'"), line);
        if (balancing.back() != op[0]) {
          return SyntaxError(
              Cat("unexpected '", op, "', expected '", std::string(1, balancing.back()), "'"),
              line);
        }
        balancing.pop_back();
      }
      emit(Token::Type::kOperator, std::string(op));
      advance(pos + op.size());
    }
  }
  emit(Token::Type::kEof, "");
  return tokens;
}

}  // namespace jinja
