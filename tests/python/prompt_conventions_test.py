"""A model's own conventions through the router, with real processes on
127.0.0.1: a SentencePiece model (Mistral v1's tokenizer.model) serves text
prompts with its BOS (none with add_special_tokens false), streams text that
stop strings cut; generation_config.json's extra EOS ids stop generation and
its temperature is the default of requests that leave it unset, not of
those that send 0."""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import MKMODEL, Cluster, make_model, reference_ids  # noqa: E402

DATA = os.environ.get("SHIFT_SHARED_DATA",
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                   "shared", "data"))
MISTRAL = os.path.join(DATA, "tokenizers", "mistral-v1.tokenizer.model")
PROMPT = "Once upon a time, in a data center far away"


class SentencePieceModelTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(MISTRAL):
            self.skipTest("shared data not found at " + DATA)
        self.tmp = tempfile.mkdtemp(prefix="shift-conventions-")
        self.model = make_model(os.path.join(self.tmp, "model"),
                                extra=["--sentencepiece_model=" + MISTRAL])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_text_prompts_get_bos_and_stream_text_that_stop_strings_cut(self):
        hello = 22557  # "Hello" in Mistral v1
        want = reference_ids(self.model, [1, hello], 16, ignore_eos=True)
        c = Cluster(self.tmp, "sp", self.model, world_size=2)
        try:
            info = c.client.model_info()
            self.assertEqual(info["tokenizer"], "SentencePiece")
            self.assertEqual(info["prompt_prefix_ids"], [1])
            self.assertEqual(info["prompt_suffix_ids"], [])
            self.assertEqual(info["eos_token_ids"], [2])
            self.assertEqual(info["vocab_size"], 32000)
            ids, text, final, _ = c.client.generate(text="Hello", max_tokens=16, ignore_eos=True)
            self.assertEqual(final["usage"]["prompt_tokens"], 2)
            self.assertEqual(ids, want)
            _, _, final, _ = c.client.generate(text="Hello", max_tokens=1,
                                               add_special_tokens=False)
            self.assertEqual(final["usage"]["prompt_tokens"], 1)
            # The same ids given as ids: used as they are, whatever the flag.
            ids2, text2, final, _ = c.client.generate(token_ids=[1, hello], max_tokens=16,
                                                      ignore_eos=True, add_special_tokens=True)
            self.assertEqual((ids2, text2, final["usage"]["prompt_tokens"]), (ids, text, 2))
            # The streamed text is the generated pieces' text (spaces from
            # "▁", bytes from byte pieces), whole characters only.
            # A stop string in the middle of that text ends it there.
            visible = text.strip()
            self.assertGreaterEqual(len(visible), 6, text)
            stop = visible[len(visible) // 2:len(visible) // 2 + 2]
            _, cut, final, _ = c.client.generate(text="Hello", max_tokens=16, ignore_eos=True,
                                                 stop=[stop])
            self.assertEqual(final["finish_reason"], "stop")
            self.assertEqual(cut, text[:text.index(stop)])
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())


class GenerationConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="shift-genconfig-")
        self.model = make_model(os.path.join(self.tmp, "model"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_extra_eos_ids_stop_and_temperature_is_the_default_of_unset_requests(self):
        ref = reference_ids(self.model, PROMPT, 24, ignore_eos=True)
        with open(os.path.join(self.model, "config.json")) as f:
            config_eos = json.load(f)["eos_token_id"]
        # Two tokens the model generates, each first seen at its position,
        # become end-of-sequence ids that config.json does not list.
        firsts = [i for i in range(2, len(ref)) if ref[i] not in ref[:i] and ref[i] != config_eos]
        self.assertGreaterEqual(len(firsts), 2, ref)
        stop_at = firsts[0]
        with open(os.path.join(self.model, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": [config_eos, ref[firsts[1]], ref[stop_at]],
                       "temperature": 0.6, "top_k": 0}, f)
        c = Cluster(self.tmp, "gen", self.model, world_size=1)
        try:
            info = c.client.model_info()
            self.assertEqual(info["eos_token_ids"], [config_eos, ref[firsts[1]], ref[stop_at]])
            self.assertAlmostEqual(info["default_temperature"], 0.6, places=6)
            self.assertEqual(info["default_top_k"], 0)
            self.assertIsNone(info["default_top_p"])
            # Greedy (an explicit 0) stops at the first extra EOS id.
            ids, _, final, _ = c.client.generate(text=PROMPT, max_tokens=24, temperature=0.0)
            self.assertEqual(ids, ref[:stop_at + 1])
            self.assertEqual(final["finish_reason"], "eos")
            # ignore_eos generates past it: still greedy.
            ids, _, _, _ = c.client.generate(text=PROMPT, max_tokens=24, temperature=0.0,
                                             ignore_eos=True)
            self.assertEqual(ids, ref)
            # Unset temperature samples at 0.6: the same as sending 0.6, and
            # not greedy.
            unset = c.client.generate(text=PROMPT, max_tokens=24, seed=11, ignore_eos=True)[0]
            sent = c.client.generate(text=PROMPT, max_tokens=24, seed=11, ignore_eos=True,
                                     temperature=0.6)[0]
            self.assertEqual(unset, sent)
            self.assertNotEqual(unset, ref)
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_an_eos_id_beyond_the_vocabulary_stops_the_router_at_start(self):
        with open(os.path.join(self.model, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": 10 ** 6}, f)
        with self.assertRaises(RuntimeError) as raised:
            Cluster(self.tmp, "bad", self.model, world_size=1)
        self.assertIn("generation_config.json", str(raised.exception))
        self.assertIn("eos_token_id", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
