#!/usr/bin/env python3
"""shift's SentencePiece tokenizer against SentencePiece itself.

Every string of ../shared/data/tokenizers/test-strings.txt, and seeded random
strings (spaces in runs, newlines, tabs, accents, CJK, emoji, the space
symbol U+2581, text that spells control tokens), are encoded by
`shift-inspect --tokenizer=MODEL --encode_jsonl` and by Debian's
python3-sentencepiece (the reference), and must give the same ids: for the
two real Mistral models of the shared data and for the hand-made models of
the fuzz corpus (user-defined and unused pieces, byte fallback,
remove_extra_whitespaces). Fails, rather than skips, when python3-
sentencepiece is missing.

  sentencepiece_reference_test.py [--cases N] [--seed S]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

try:
    import sentencepiece
except ImportError:  # reported as a failure by the test
    sentencepiece = None

ARGS = argparse.Namespace(cases=400, seed=1)
HERE = os.path.dirname(os.path.abspath(__file__))
BINARY_DIR = os.environ.get("SHIFT_BINARY_DIR", os.path.join(HERE, "..", "..", "build"))
INSPECT = os.path.join(BINARY_DIR, "tools", "shift-inspect")
DATA = os.environ.get("SHIFT_SHARED_DATA", os.path.join(HERE, "..", "..", "..", "shared", "data"))
TOKENIZERS = os.path.join(DATA, "tokenizers")
CORPUS = os.path.join(HERE, "..", "fuzz", "corpus", "tokenizer_model")

ALPHABET = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") +
            list(" " * 12) + ["\n", "\t", "\r", ".", ",", "!", "?", "'", '"', "-", "_", "(",
                              "[", "]", "<", ">", "/"] +
            ["é", "ü", "ß", "Å", "ç", "ñ", "中", "文", "日本", "한", "🦙", "🚀", "👨‍👩‍👧", "𝔘",
             "\u2581", "\u00a0", "\u3000", "\u200b"] +
            ["<s>", "</s>", "[INST]", "[/INST]", "<unk>", "<0x0A>", "<tool>", "Hello", " Hello",
             "▁Hello", "world", "  ", "ello"])


def test_strings():
    with open(os.path.join(TOKENIZERS, "test-strings.txt"), "rb") as f:
        data = f.read().decode("utf-8")
    strings = data.split("\n__ggml_vocab_test__\n")
    return strings[:-1]


def random_strings(seed, count):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 80])
        out.append("".join(rng.choice(ALPHABET) for _ in range(n)))
    # Long runs: one of each kind.
    out += [" " * 300, "\n" * 50 + "x", "🦙" * 200, "a" * 1000, "▁" * 40 + " x"]
    return out


def shift_ids(model, strings):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for s in strings:
            f.write(json.dumps(s) + "\n")
        path = f.name
    try:
        out = subprocess.run([INSPECT, "--tokenizer=" + model, "--encode_jsonl=" + path],
                             capture_output=True, text=True, timeout=300)
    finally:
        os.remove(path)
    if out.returncode != 0:
        raise AssertionError("shift-inspect failed: " + out.stderr)
    lines = out.stdout.split("\n")
    # One line per input line; --encode_jsonl skips empty input lines only,
    # and json.dumps never writes one.
    return [[int(t) for t in line.split()] for line in lines[:len(strings)]]


class SentencePieceReferenceTest(unittest.TestCase):
    def check(self, model, strings):
        self.assertIsNotNone(sentencepiece, "python3-sentencepiece is not installed "
                             "(tools/setup-deps installs it)")
        reference = sentencepiece.SentencePieceProcessor(model_file=model)
        got = shift_ids(model, strings)
        self.assertEqual(len(got), len(strings))
        mismatches = [(s, g, reference.encode(s)) for s, g in zip(strings, got)
                      if g != reference.encode(s)]
        self.assertEqual(mismatches[:5], [], "%d of %d strings differ (text, shift, reference)"
                         % (len(mismatches), len(strings)))

    def test_mistral_models(self):
        if not os.path.isdir(TOKENIZERS):
            self.skipTest("shared data not found at " + TOKENIZERS)
        strings = test_strings() + random_strings(ARGS.seed, ARGS.cases)
        for name in ("mistral-v1", "mistral-v3"):
            with self.subTest(model=name):
                self.check(os.path.join(TOKENIZERS, name + ".tokenizer.model"), strings)

    def test_hand_made_models(self):
        strings = random_strings(ARGS.seed + 1, ARGS.cases)
        for name in sorted(os.listdir(CORPUS)):
            if name.endswith(".model"):
                with self.subTest(model=name):
                    self.check(os.path.join(CORPUS, name), strings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=ARGS.cases)
    parser.add_argument("--seed", type=int, default=ARGS.seed)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
