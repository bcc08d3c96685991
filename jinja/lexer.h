// Splits a template into tokens as Jinja2's lexer does, with transformers'
// settings: trim_blocks, lstrip_blocks, `-`/`+` whitespace control, CRLF
// read as \n, and one final newline dropped (keep_trailing_newline=False).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace jinja {

struct Token {
  enum class Type {
    kData,        // text outside tags
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,
    kString,
    kInt,
    kFloat,
    kOperator,  // + - * / // % ** ~ == != < <= > >= = . : | , ( ) [ ] { }
    kEof,
  };
  Type type;
  std::string text;  // data, name, decoded string literal or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source,
                                            const LexerOptions& options = {});

}  // namespace jinja
