// Python's str operations on UTF-8 text: code points, str.isspace,
// isprintable, upper/lower/title/capitalize, strip, split, splitlines.
// Bytes that are not UTF-8 pass through as themselves (surrogateescape).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace jinja::pystr {

std::u32string Decode(std::string_view utf8);
std::string Encode(std::u32string_view cps);
void AppendCodePoint(char32_t cp, std::string* out);
size_t Length(std::string_view utf8);  // in code points

bool IsSpace(char32_t cp);      // str.isspace
bool IsPrintable(char32_t cp);  // str.isprintable (close: no full Unicode tables)
bool IsCased(char32_t cp);
bool IsLower(char32_t cp);
bool IsUpper(char32_t cp);

std::string Upper(std::string_view s);
std::string Lower(std::string_view s);
std::string Title(std::string_view s);       // str.title
std::string Capitalize(std::string_view s);  // str.capitalize

// str.strip/lstrip/rstrip; chars absent = whitespace.
std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// str.split(sep, maxsplit); sep absent = runs of whitespace.
std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit);
std::vector<std::string> SplitLines(std::string_view s);  // str.splitlines()
// str.replace(old, new, count); count < 0 = all.
std::string Replace(std::string_view s, std::string_view from, std::string_view to, int64_t count);

}  // namespace jinja::pystr
