#!/usr/bin/env python3
"""Prints test strings for tokenizer comparison as JSON lines: the given
test strings, then 1500 random mixtures of words, numbers, whitespace runs,
punctuation, contractions, code, accents, CJK and emoji (seeded, so the same
every run).   fuzz_strings.py TEST_STRINGS_FILE"""

import json
import random
import sys

PIECES = [
    "hello", "Hello", "HELLO", " world", "the", " The", "don't", "I'm", "we'll", "they've",
    "it's", "'s", "'RE", "naïve", "café", "Ünïcödé", "straße", "İstanbul", "Ελληνικά",
    "русский", "עברית", "العربية", "हिन्दी", "ไทย", "中文字符", "日本語のテキスト", "한국어",
    "😀", "👨‍👩‍👧", "🇫🇷", "✓", "→", "…", "—", "“quoted”", "€100", "$3.14", "1234567",
    "0x1F", "3.0e-5", "v1.2.3", "2026-11-25", "12:30", "def f(x):", "    return x", "{}",
    "[1, 2]", "a_b", "CamelCase", "snake_case", "https://example.com/a?b=c", "foo@bar.org",
    "\t", "\n", "\n\n", "  ", "   ", "\r\n", " \n ", "\u00a0", "\u3000", "!!", "???", "...",
    "#include <x>", "ab", "zz", "'", '"', "-", "--", "==", "+=",
]


def main():
    rng = random.Random(2026)
    with open(sys.argv[1], "rb") as f:
        base = f.read().decode("utf-8").split("\n__ggml_vocab_test__\n")
    out = [s for s in base if s]
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(PIECES))
            elif r < 0.75:
                parts.append(" " * rng.randint(0, 3) + str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif r < 0.9:
                parts.append("".join(chr(rng.randint(0x20, 0x7e)) for _ in range(rng.randint(1, 8))))
            else:
                # Any code point outside the surrogates.
                cp = rng.randint(0xa0, 0x2ffff)
                parts.append(chr(cp) if not 0xd800 <= cp <= 0xdfff else "x")
            if rng.random() < 0.5:
                parts.append(rng.choice([" ", "", "\n", "  "]))
        out.append("".join(parts))
    for s in out:
        print(json.dumps(s))


if __name__ == "__main__":
    main()
