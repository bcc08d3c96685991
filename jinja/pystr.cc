// Python's str operations on UTF-8 text (see pystr.h).
#include "jinja/pystr.h"

#include <algorithm>

namespace jinja::pystr {
namespace {

// Invalid bytes decode to U+DC80..U+DCFF and encode back to the byte.
constexpr char32_t kEscapeBase = 0xDC00;

struct CaseRange {
  char32_t lower_first, lower_last, upper_first;
};
// Lowercase ranges whose uppercase is at a fixed offset.
constexpr CaseRange kOffsetRanges[] = {
    {U'a', U'z', U'A'},       {0xE0, 0xF6, 0xC0},       {0xF8, 0xFE, 0xD8},
    {0x3B1, 0x3C1, 0x391},    {0x3C3, 0x3CB, 0x3A3},    {0x430, 0x44F, 0x410},
    {0x450, 0x45F, 0x400},    {0x561, 0x586, 0x531},    {0xFF41, 0xFF5A, 0xFF21},
    {0x2170, 0x217F, 0x2160}, {0x24D0, 0x24E9, 0x24B6},
};

// Digraphs with three cases (upper, title, lower): Ǆ ǅ ǆ and the like.
constexpr char32_t kTriples[][3] = {
    {0x1C4, 0x1C5, 0x1C6}, {0x1C7, 0x1C8, 0x1C9}, {0x1CA, 0x1CB, 0x1CC}, {0x1F1, 0x1F2, 0x1F3}};
const char32_t* Triple(char32_t cp) {
  for (const auto& t : kTriples) {
    if (cp == t[0] || cp == t[1] || cp == t[2]) return t;
  }
  return nullptr;
}

// Latin Extended-A and Cyrillic pairs: even upper, odd lower.
bool InPairBlock(char32_t cp) {
  return (cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177) ||
         (cp >= 0x460 && cp <= 0x481) || (cp >= 0x48A && cp <= 0x4BF) ||
         (cp >= 0x4D0 && cp <= 0x52F) || (cp >= 0x1E00 && cp <= 0x1E95) ||
         (cp >= 0x1EA0 && cp <= 0x1EFF);
}
bool InOddPairBlock(char32_t cp) {  // odd upper, even lower
  return (cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E);
}

char32_t ToUpperSimple(char32_t cp) {
  if (const char32_t* t = Triple(cp)) return t[0];
  for (const CaseRange& r : kOffsetRanges) {
    if (cp >= r.lower_first && cp <= r.lower_last) return cp - r.lower_first + r.upper_first;
  }
  if (cp == 0xFF) return 0x178;
  if (cp == 0x3C2) return 0x3A3;  // final sigma
  if (cp == 0xB5) return 0x39C;
  if (InPairBlock(cp) && (cp & 1) == 1) return cp - 1;
  if (InOddPairBlock(cp) && (cp & 1) == 0) return cp - 1;
  return cp;
}

char32_t ToLowerSimple(char32_t cp) {
  if (const char32_t* t = Triple(cp)) return t[2];
  for (const CaseRange& r : kOffsetRanges) {
    const char32_t last = r.upper_first + (r.lower_last - r.lower_first);
    if (cp >= r.upper_first && cp <= last) return cp - r.upper_first + r.lower_first;
  }
  if (cp == 0x178) return 0xFF;
  if (cp == 0x130) return U'i';  // Python gives "i̇"; close enough here
  if (InPairBlock(cp) && (cp & 1) == 0) return cp + 1;
  if (InOddPairBlock(cp) && (cp & 1) == 1) return cp + 1;
  return cp;
}

void AppendUpper(char32_t cp, std::u32string* out) {
  if (cp == 0xDF) {  // ß
    out->append(U"SS");
    return;
  }
  out->push_back(ToUpperSimple(cp));
}

void AppendTitle(char32_t cp, std::u32string* out) {
  if (const char32_t* t = Triple(cp)) {
    out->push_back(t[1]);
    return;
  }
  if (cp == 0xDF) {
    out->append(U"Ss");
    return;
  }
  out->push_back(ToUpperSimple(cp));
}

bool InChars(char32_t cp, const std::u32string& chars) {
  return chars.find(cp) != std::u32string::npos;
}

}  // namespace

std::u32string Decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = 0;
    char32_t cp = 0;
    if (c < 0x80) {
      out.push_back(c);
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok) {
      const char32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      ok = cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (!ok) {
      out.push_back(kEscapeBase + c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp >= kEscapeBase + 0x80 && cp <= kEscapeBase + 0xFF) {
    out->push_back(static_cast<char>(cp - kEscapeBase));
  } else if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Encode(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) AppendCodePoint(cp, &out);
  return out;
}

size_t Length(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return Decode(s).size();
  }
  return s.size();
}

bool IsSpace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool IsPrintable(char32_t cp) {
  if (cp == U' ') return true;
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) return false;
  if (IsSpace(cp)) return false;
  if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61C || cp == 0x6DD || cp == 0x70F || cp == 0x180E ||
      (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x202A && cp <= 0x202E) ||
      (cp >= 0x2060 && cp <= 0x206F) || cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB) ||
      cp == 0xFFFE || cp == 0xFFFF || (cp >= 0xD800 && cp <= 0xF8FF) || cp >= 0xF0000 ||
      (cp >= 0xE0000 && cp <= 0xE007F)) {
    return false;
  }
  return true;
}

bool IsLower(char32_t cp) {
  if (const char32_t* t = Triple(cp)) return cp == t[2];
  return ToUpperSimple(cp) != cp || cp == 0xDF;
}
bool IsUpper(char32_t cp) {
  if (const char32_t* t = Triple(cp)) return cp == t[0];
  return ToLowerSimple(cp) != cp;
}
bool IsCased(char32_t cp) { return Triple(cp) != nullptr || IsLower(cp) || IsUpper(cp); }

std::string Upper(std::string_view s) {
  std::u32string out;
  for (char32_t cp : Decode(s)) AppendUpper(cp, &out);
  return Encode(out);
}

std::string Lower(std::string_view s) {
  std::u32string cps = Decode(s);
  for (char32_t& cp : cps) cp = ToLowerSimple(cp);
  return Encode(cps);
}

std::string Title(std::string_view s) {
  std::u32string out;
  bool previous_cased = false;
  for (char32_t cp : Decode(s)) {
    if (previous_cased) {
      out.push_back(ToLowerSimple(cp));
    } else {
      AppendTitle(cp, &out);
    }
    previous_cased = IsCased(cp);
  }
  return Encode(out);
}

std::string Capitalize(std::string_view s) {
  std::u32string cps = Decode(s);
  std::u32string out;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (i == 0) {
      AppendTitle(cps[i], &out);
    } else {
      out.push_back(ToLowerSimple(cps[i]));
    }
  }
  return Encode(out);
}

std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  const std::u32string cps = Decode(s);
  const std::u32string set = chars ? Decode(*chars) : std::u32string();
  auto strip = [&](char32_t cp) { return chars ? InChars(cp, set) : IsSpace(cp); };
  size_t begin = 0, end = cps.size();
  if (left) {
    while (begin < end && strip(cps[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip(cps[end - 1])) --end;
  }
  return Encode(std::u32string_view(cps).substr(begin, end - begin));
}

std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t at = s.find(*sep, start);
      if (at == std::string_view::npos) break;
      parts.emplace_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    parts.emplace_back(s.substr(start));
    return parts;
  }
  const std::u32string cps = Decode(s);
  size_t i = 0;
  while (true) {
    while (i < cps.size() && IsSpace(cps[i])) ++i;
    if (i == cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      parts.push_back(Encode(std::u32string_view(cps).substr(i)));  // keeps trailing space
      break;
    }
    const size_t start = i;
    while (i < cps.size() && !IsSpace(cps[i])) ++i;
    parts.push_back(Encode(std::u32string_view(cps).substr(start, i - start)));
  }
  return parts;
}

std::vector<std::string> SplitLines(std::string_view s) {
  const std::u32string cps = Decode(s);
  std::vector<std::string> lines;
  size_t start = 0, i = 0;
  while (i < cps.size()) {
    const char32_t c = cps[i];
    const bool boundary = c == U'\n' || c == U'\r' || c == 0x0B || c == 0x0C || c == 0x1C ||
                          c == 0x1D || c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!boundary) {
      ++i;
      continue;
    }
    lines.push_back(Encode(std::u32string_view(cps).substr(start, i - start)));
    i += (c == U'\r' && i + 1 < cps.size() && cps[i + 1] == U'\n') ? 2 : 1;
    start = i;
  }
  if (start < cps.size()) lines.push_back(Encode(std::u32string_view(cps).substr(start)));
  return lines;
}

std::string Replace(std::string_view s, std::string_view from, std::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` before every code point and at the end.
    const std::u32string cps = Decode(s);
    int64_t done = 0;
    for (char32_t cp : cps) {
      if (count < 0 || done < count) {
        out.append(to);
        ++done;
      }
      AppendCodePoint(cp, &out);
    }
    if (count < 0 || done < count) out.append(to);
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(from, start);
    if (at == std::string_view::npos) break;
    out.append(s.substr(start, at - start));
    out.append(to);
    start = at + from.size();
    ++done;
  }
  out.append(s.substr(start));
  return out;
}

}  // namespace jinja::pystr
