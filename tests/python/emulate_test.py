"""bench/gpu/emulate.py, the driver of gpu-check's emulate stage, on the CPU.

A tiny four-layer model, rank 0 of 2 emulated: the profile has a line per
mode and step shape in shift-generate's --compute_profile format, which
shift-sim accepts; the work scaled from 1 and 2 layers to 4 equals the work
measured at 4 (GEMM FLOPs and collective bytes are exactly linear in the
layer count); and the emulated rank's TP GEMM FLOPs are exactly half of a
real single rank's.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import GENERATE, SIM, make_model  # noqa: E402

EMULATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "gpu",
                       "emulate.py")
SHAPES = 4  # decode batches 1, 2, 4 and one prefill


def profile(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class EmulateTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="shift-emulate-")
        self.model = make_model(os.path.join(self.tmp, "model"),
                                extra=["--num_layers=4", "--num_kv_heads=4"])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def emulate(self, name, layers, *extra):
        out = os.path.join(self.tmp, name)
        done = subprocess.run(
            [sys.executable, EMULATE, "--generate=" + GENERATE, "--model=" + self.model,
             "--work=" + out + "-work", "--device=cpu", "--world_size=2", "--rank=0",
             "--layers=" + layers, "--target_layers=4", "--batches=1,2,4", "--context=48",
             "--prefill=80", "--decode_steps=4", "--chunk=64", "--kv_cache_bytes=%d" % (32 << 20),
             "--profile_out=" + out + ".jsonl", "--table_out=" + out + ".md"] + list(extra),
            capture_output=True, text=True, timeout=240)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        with open(out + ".md") as f:
            return profile(out + ".jsonl"), f.read()

    def test_profile_scaling_and_flops_check(self):
        scaled, table = self.emulate("scaled", "1,2", "--check_batches=1,2")
        measured, _ = self.emulate("measured", "2,4")
        self.assertEqual(len(scaled), 2 * SHAPES, table)
        self.assertEqual({x["mode"] for x in scaled}, {"tp", "sp"})
        for s, m in zip(scaled, measured):
            self.assertEqual((s["mode"], s["tokens"], s["sequences"]),
                             (m["mode"], m["tokens"], m["sequences"]))
            self.assertEqual(s["layers"], 4)
            self.assertEqual(s["measured_layers"], [1, 2])
            self.assertEqual(s["world_size"], 2)
            self.assertEqual(s["gemm_flops"], m["gemm_flops"], s)
            self.assertEqual(s["collective_bytes"], m["collective_bytes"], s)
            self.assertGreater(s["gemm_flops"], 0)
            self.assertGreater(s["collective_bytes"], 0)
        # One real rank's GEMM FLOPs are exactly twice the emulated rank's.
        self.assertIn("| 1 |", table)
        self.assertIn("| 2 |", table)
        self.assertNotIn("**no**", table)
        self.assertNotIn("Failures", table)
        # shift-sim reads the profile as a measured compute law.
        model_config = os.path.join(self.model, "config.json")
        done = subprocess.run(
            [SIM, "--model=" + model_config, "--hardware=" + os.path.join(
                os.path.dirname(EMULATE), "..", "sim", "hardware", "cpu-local.json"),
             "--world_size=2", "--compute_profile=" + os.path.join(self.tmp, "scaled.jsonl"),
             "--requests=4", "--input_tokens=32", "--output_tokens=4", "--rate=100"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


if __name__ == "__main__":
    unittest.main()
