#include "common/unicode.h"

#include <algorithm>
#include <iterator>
#include <span>

namespace shift {
namespace {

struct CodepointRange {
  char32_t first;
  char32_t last;
};

#include "common/unicode_tables.inc"

bool InRanges(std::span<const CodepointRange> ranges, char32_t cp) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != ranges.begin() && cp <= std::prev(it)->last;
}

bool IsContinuation(unsigned char b) { return (b & 0xC0) == 0x80; }

}  // namespace

Utf8Step DecodeUtf8(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {Utf8Step::kOk, 1, b0};
  int length;
  char32_t cp;
  // Bounds for the second byte exclude overlong forms, surrogates and
  // values past U+10FFFF up front, so every later byte is a plain 80..BF.
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Step::kInvalid, 1, 0};
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return {Utf8Step::kIncomplete, i, 0};
    const auto b = static_cast<unsigned char>(s[i]);
    const bool ok = i == 1 ? (b >= lo && b <= hi) : IsContinuation(b);
    if (!ok) return {Utf8Step::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Step::kOk, length, cp};
}

size_t FindInvalidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Step step = DecodeUtf8(s.substr(pos));
    if (step.kind != Utf8Step::kOk) return pos;
    pos += step.length;
  }
  return std::string_view::npos;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
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

bool HasProperty(char32_t cp, UnicodeProperty property) {
  switch (property) {
    case UnicodeProperty::kLetter:
      return InRanges(kLetterRanges, cp);
    case UnicodeProperty::kMark:
      return InRanges(kMarkRanges, cp);
    case UnicodeProperty::kNumber:
      return InRanges(kNumberRanges, cp);
    case UnicodeProperty::kDecimalNumber:
      return InRanges(kDecimalNumberRanges, cp);
    case UnicodeProperty::kPunctuation:
      return InRanges(kPunctuationRanges, cp);
    case UnicodeProperty::kConnectorPunctuation:
      return InRanges(kConnectorPunctuationRanges, cp);
    case UnicodeProperty::kSymbol:
      return InRanges(kSymbolRanges, cp);
    case UnicodeProperty::kSeparator:
      return InRanges(kSeparatorRanges, cp);
    case UnicodeProperty::kWhiteSpace:
      return InRanges(kWhiteSpaceRanges, cp);
  }
  return false;
}

namespace {

struct ByteAlphabet {
  static constexpr char32_t kSize = 256 + 68;
  char32_t char_of[256];   // byte -> codepoint
  int16_t byte_of[kSize];  // codepoint -> byte, or -1

  ByteAlphabet() {
    std::fill(std::begin(byte_of), std::end(byte_of), -1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      char_of[b] = printable ? static_cast<char32_t>(b) : next++;
      byte_of[char_of[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

}  // namespace

std::string ByteLevelEncode(std::string_view bytes) {
  const ByteAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(alphabet.char_of[b], &out);
  return out;
}

std::optional<std::string> ByteLevelDecode(std::string_view key) {
  const ByteAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(key.size());
  while (!key.empty()) {
    const Utf8Step step = DecodeUtf8(key);
    if (step.kind != Utf8Step::kOk || step.cp >= ByteAlphabet::kSize ||
        alphabet.byte_of[step.cp] < 0) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(alphabet.byte_of[step.cp]));
    key.remove_prefix(step.length);
  }
  return out;
}

}  // namespace shift
