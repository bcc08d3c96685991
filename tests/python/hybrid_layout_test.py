"""The hybrid layout end to end, with real processes on 127.0.0.1: a group
of 4 ranks as (sp, tp) = (2, 2), each rank holding half the weights,
streams the single-rank engine's tokens with steps in both modes, loses a
rank and re-forms with the same layout; a group of 8 as (4, 2) does the
same on a model that splits over 8; a layout that does not divide the
group is refused at start with the rule."""

import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import ROUTER, Cluster, make_model, metric, reference_ids  # noqa: E402

PROMPT = "Once upon a time, in a data center far away, a router scheduled every step"


class HybridLayoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-hybrid-")
        # 8 query heads and 4 kv heads; a 256-wide MLP splits over 8 ranks.
        cls.model = make_model(os.path.join(cls.tmp, "model"), extra=[
            "--num_heads=8", "--num_kv_heads=4", "--intermediate_size=256"])
        cls.ref = reference_ids(cls.model, PROMPT, 24, ignore_eos=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def serve(self, name, world_size, sp_degree, router_flags=(), worker_flags=()):
        # Prompts in the base mode (more than 8 step tokens), decodes in TP.
        return Cluster(self.tmp, name, self.model, world_size=world_size,
                       router_flags=["--sp_degree=%d" % sp_degree, "--shift_threshold=8",
                                     "--heartbeat_timeout_s=3"] + list(router_flags),
                       worker_flags=["--sp_degree=%d" % sp_degree] + list(worker_flags))

    def expect_reference(self, c):
        ids = c.client.generate(text=PROMPT, max_tokens=24, ignore_eos=True)[0]
        self.assertEqual(ids, self.ref)

    def test_a_2x2_group_streams_the_single_ranks_tokens_and_reforms(self):
        c = self.serve("sp2tp2", 4, 2)
        try:
            self.assertEqual(c.client.model_info()["sp_degree"], 2)
            self.expect_reference(c)
            text = c.metrics()
            self.assertEqual(metric(text, 'shift_group_layout_info{sp="2",tp="2"}'), 1)
            for mode in ("tp", "sp"):
                self.assertGreater(
                    metric(text, 'shift_steps_total{group="0",mode="%s"}' % mode) or 0, 0, mode)
            # The last step decoded in TP: shift.v1.Mode's MODE_TP, 1.
            self.assertEqual(metric(text, 'shift_mode{group="0"}'), 1)
            # A rank lost and restarted: the group re-forms with the same
            # layout under a new generation and gives the same tokens.
            generation = c.client.status()["groups"][0]["generation"]
            c.ranks[(0, 3)].kill()
            c.ranks[(0, 3)].wait()
            deadline = time.time() + 20
            while c.client.status()["groups"][0]["ready"]:
                self.assertLess(time.time(), deadline, "the lost rank was not noticed")
                time.sleep(0.05)
            c.start_rank(0, 3)
            c.wait_ready([0], timeout=60)
            self.assertGreater(c.client.status()["groups"][0]["generation"], generation)
            self.expect_reference(c)
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_preempted_requests_recompute_the_same_tokens(self):
        # 14 blocks of 16 tokens per rank (4096 bytes each: one kv head of
        # 16 over 2 layers): two prompts of about 20 tokens with 120 out
        # cannot both fit, so one is preempted and recomputed.
        want = reference_ids(self.model, PROMPT, 120, ignore_eos=True)
        c = self.serve("preempt", 4, 2, ["--max_num_seqs=4", "--max_model_len=512"],
                       ["--kv_cache_bytes=%d" % (14 * 4096)])
        try:
            for _ in range(5):  # until two overlap on a loaded machine
                with concurrent.futures.ThreadPoolExecutor(3) as pool:
                    results = list(pool.map(lambda _: c.client.generate(
                        text=PROMPT, max_tokens=120, ignore_eos=True)[0], range(3)))
                for ids in results:
                    self.assertEqual(ids, want)
                if (metric(c.metrics(), "shift_preemptions_total") or 0) > 0:
                    break
            self.assertGreater(metric(c.metrics(), "shift_preemptions_total") or 0, 0)
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_a_4x2_group_of_8_streams_the_single_ranks_tokens(self):
        # Every step in the base mode.
        c = self.serve("sp4tp2", 8, 4, ["--shift_policy=sp"])
        try:
            self.expect_reference(c)
            # shift.v1.Mode's MODE_SP, 2.
            self.assertEqual(metric(c.metrics(), 'shift_mode{group="0"}'), 2)
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_a_layout_that_does_not_divide_the_group_is_refused(self):
        done = subprocess.run([ROUTER, "--model=" + self.model, "--world_size=4", "--sp_degree=3",
                               "--port=0", "--internal_port=0", "--metrics_port=0"],
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("--sp_degree must divide", done.stderr)


if __name__ == "__main__":
    unittest.main()
