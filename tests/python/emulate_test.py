"""One rank of a larger group, emulated, on the CPU.

bench/gpu/emulate.py, the driver of gpu-check's emulate stage: a tiny
four-layer model, rank 0 of 2 emulated: the profile has a line per mode and
step shape in shift-generate's --compute_profile format, which shift-sim
accepts; the work scaled from 1 and 2 layers to 4 equals the work measured
at 4 (GEMM FLOPs and collective bytes are exactly linear in the layer
count); and the emulated rank's TP GEMM FLOPs are exactly half of a real
single rank's.

shift-worker --emulate_world_size: a router's group of one served by rank
0 of 2 emulated, in both modes; its compute profile says so, with the
collectives' bytes, and its GEMM FLOPs are a real group's rank 0's.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import GENERATE, SIM, Cluster, make_model  # noqa: E402

EMULATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "gpu",
                       "emulate.py")
SHAPES = 4  # decode batches 1, 2, 4 and one prefill


def profile_lines(path):
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
            return profile_lines(out + ".jsonl"), f.read()

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


class EmulatedWorkerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="shift-emulated-worker-")
        self.model = make_model(os.path.join(self.tmp, "model"), extra=["--num_kv_heads=4"])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def serve(self, name, world_size, worker_flags):
        """Serves three requests, prefilled in SP and decoded in TP; the
        processes' exit codes."""
        c = Cluster(self.tmp, name, self.model, world_size,
                    router_flags=["--shift_threshold=8"], worker_flags=worker_flags)
        try:
            for i in range(3):
                ids = c.client.generate(timeout=60, text="a longer prompt for rank %d " % i * 4,
                                        max_tokens=6, ignore_eos=True)[0]
                self.assertEqual(len(ids), 6)
        finally:
            codes = c.stop()
        return codes, c

    def test_a_worker_emulates_rank_0_of_a_larger_group(self):
        profile = os.path.join(self.tmp, "emulated.jsonl")
        codes, c = self.serve("emulated", 1, ["--emulate_world_size=2",
                                              "--compute_profile=" + profile])
        self.assertEqual(codes, [0, 0], c.all_logs())
        lines = profile_lines(profile)
        self.assertGreater(len(lines), 6)
        self.assertEqual({(x["world_size"], x["rank"]) for x in lines}, {(2, 0)})
        self.assertEqual({x["mode"] for x in lines}, {"tp", "sp"})
        for x in lines:
            self.assertGreater(x["collective_bytes"], 0, x)
            self.assertGreater(x["gemm_flops"], 0, x)
            self.assertAlmostEqual(x["compute_s"], x["step_s"] - x["collective_s"], places=6)
        # A real group's rank 0 on the same steps does the same GEMM work.
        real = os.path.join(self.tmp, "real.jsonl")
        real_codes, c = self.serve("real", 2, ["--compute_profile=" + real])
        self.assertEqual(real_codes, [0, 0, 0], c.all_logs())
        rank0 = [x for x in profile_lines(real) if x["rank"] == 0]
        shape = lambda x: (x["mode"], x["tokens"], x["sequences"], x["attention"])  # noqa: E731
        emulated_flops = {shape(x): x["gemm_flops"] for x in lines}
        common = [x for x in rank0 if shape(x) in emulated_flops]
        self.assertGreater(len(common), 3)
        for x in common:
            self.assertEqual(x["gemm_flops"], emulated_flops[shape(x)], x)

    def test_emulation_needs_a_router_group_of_one(self):
        done = subprocess.run(
            [os.path.join(os.path.dirname(GENERATE), "..", "worker", "shift-worker"),
             "--model=" + self.model, "--world_size=2", "--emulate_world_size=2"],
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("--world_size=1", done.stderr)


if __name__ == "__main__":
    unittest.main()
