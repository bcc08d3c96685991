"""The weights digest with real processes on 127.0.0.1: a router given only
config.json and the tokenizer files serves a group of two TP ranks (an FP8
model, so each rank reads only its rows of every projection), and the
group's digest is the one shift-inspect prints; a rank with one tensor's
byte changed, a rank of another checkpoint and a rank of another config are
refused, the first named by its tensor; a router pinned to another digest
refuses the group, and one given a malformed digest does not start."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import BIN, ROUTER, WORKER, Cluster, make_model, read, reference_ids  # noqa: E402

INSPECT = os.path.join(BIN, "tools", "shift-inspect")
PROMPT = "Once upon a time, in a data center far away, a router scheduled every step"
# 8 query heads, 4 kv heads and a 256-wide MLP split over 2 TP ranks in
# 128-row blocks; FP8 projections with 128 x 128 block scales.
SHAPE = ["--num_heads=8", "--num_kv_heads=4", "--intermediate_size=256", "--dtype=fp8",
         "--fp8_block=128"]


def inspect_digest(model):
    out = subprocess.run([INSPECT, "--model=" + model, "--weights_digest"], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return re.search(r"^weights digest: ([0-9a-f]{16})$", out, re.M).group(1)


def flip_byte(model, tensor, from_end=3):
    """Flips one bit of one byte near the end of `tensor`'s data."""
    path = os.path.join(model, "model.safetensors")
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        begin, end = header[tensor]["data_offsets"]
        at = 8 + length + end - from_end
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def refusal(router_address, model, rank=1, world_size=2, extra=()):
    """A shift-worker registering as group 0 `rank`: its exit code and stderr."""
    run = subprocess.run(
        [WORKER, "--router=" + router_address, "--group=0", "--rank=%d" % rank,
         "--world_size=%d" % world_size, "--model=" + model, "--threads=1",
         "--reconnect_timeout_s=5"] + list(extra),
        capture_output=True, text=True, timeout=120)
    return run.returncode, run.stderr


class WeightsDigestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-digest-")
        cls.model = make_model(os.path.join(cls.tmp, "model"), extra=SHAPE)
        cls.digest = inspect_digest(cls.model)
        # What the router is given: the model's files less its weights.
        cls.router_dir = os.path.join(cls.tmp, "router-files")
        os.makedirs(cls.router_dir)
        for name in os.listdir(cls.model):
            if "safetensors" not in name:
                shutil.copy(os.path.join(cls.model, name), cls.router_dir)
        cls.cluster = Cluster(
            cls.tmp, "tp2", cls.model, 2, router_model=cls.router_dir,
            router_flags=["--sp_degree=1", "--expected_weights_digest=" + cls.digest],
            worker_flags=["--sp_degree=1"])

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_a_router_without_weights_serves_the_group_whose_digest_inspect_prints(self):
        self.assertFalse([n for n in os.listdir(self.router_dir) if "safetensors" in n])
        want = reference_ids(self.model, PROMPT, 16, ignore_eos=True)
        ids = self.cluster.client.generate(text=PROMPT, max_tokens=16, ignore_eos=True)[0]
        self.assertEqual(ids, want)
        log = read(self.cluster.logs[0])
        formed = [line for line in log.splitlines() if "event=group_formed" in line]
        self.assertTrue(formed, log)
        self.assertIn("weights_digest=" + self.digest, formed[-1])

    def test_a_rank_with_one_changed_byte_is_refused_naming_the_tensor(self):
        changed = copy_model(self.model, os.path.join(self.tmp, "one-byte"))
        tensor = "model.layers.1.mlp.down_proj.weight"
        flip_byte(changed, tensor)
        self.assertNotEqual(inspect_digest(changed), self.digest)
        code, err = refusal(self.cluster.internal_address, changed, extra=["--sp_degree=1"])
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"tensor %s differs from group 0 rank \d's \(bytes 0\.\.\d+\)"
                         % re.escape(tensor))

    def test_ranks_of_another_checkpoint_or_config_are_refused(self):
        other = make_model(os.path.join(self.tmp, "other-seed"), seed=8, extra=SHAPE)
        self.assertEqual(read(os.path.join(other, "config.json")),
                         read(os.path.join(self.model, "config.json")))
        code, err = refusal(self.cluster.internal_address, other, extra=["--sp_degree=1"])
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"tensor \S+ differs from group 0 rank \d's")
        # The same weights under a config.json that differs (one more space).
        spaced = copy_model(self.model, os.path.join(self.tmp, "spaced-config"))
        with open(os.path.join(spaced, "config.json"), "a") as f:
            f.write(" ")
        code, err = refusal(self.cluster.internal_address, spaced, extra=["--sp_degree=1"])
        self.assertNotEqual(code, 0)
        self.assertIn("its config.json differs from the router's", err)
        # The serving group is untouched.
        want = reference_ids(self.model, PROMPT, 8, ignore_eos=True)
        self.assertEqual(
            self.cluster.client.generate(text=PROMPT, max_tokens=8, ignore_eos=True)[0], want)

    def test_a_router_pinned_to_another_digest_refuses_the_group(self):
        other = "%016x" % (int(self.digest, 16) ^ 1)
        pinned = Cluster(self.tmp, "pinned", self.model, 1, router_model=self.router_dir,
                         router_flags=["--expected_weights_digest=" + other], start_ranks=False)
        try:
            code, err = refusal(pinned.internal_address, self.model, rank=0, world_size=1)
            self.assertNotEqual(code, 0)
            self.assertIn("weights digest is %s, not the one the router's "
                          "--expected_weights_digest pins" % self.digest, err)
            self.assertNotIn(other, err)
        finally:
            pinned.stop()
        bad = subprocess.run([ROUTER, "--model=" + self.router_dir, "--port=0",
                              "--internal_port=0", "--metrics_port=0",
                              "--expected_weights_digest=XYZ"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("16 lower-case hex digits", bad.stderr)


if __name__ == "__main__":
    unittest.main()
