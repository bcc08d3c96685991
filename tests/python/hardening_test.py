"""Attacks of a hostile client on the loopback, with real processes: each
used to hurt the service (see the README's "Security").

- The probe's heartbeat starvation: concurrent prompts of MiBs of spaces,
  each once tokenized for seconds on gRPC's threads before being refused,
  are refused by their length before any tokenizing, so the ranks'
  heartbeats are not delayed, the group is not re-formed and other requests
  are served.
- Prompts under that length that still take seconds to tokenize (and are
  then refused) are tokenized off gRPC's threads, in a lane of their own:
  heartbeats go on, the group stays, small requests are served meanwhile.
- A connection that never finishes its handshake is closed after
  --handshake_timeout_s (gRPC's default kept it 120 s, holding a
  descriptor)."""

import concurrent.futures
import os
import shutil
import socket
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, make_model  # noqa: E402

PROMPT = "Once upon a time, in a data center far away"


def attack_while_serving(test, c, attack, count, limit_s):
    """Runs `count` attacks on 6 threads while one client keeps generating
    4 greedy tokens; returns the attacks' results, each small request's
    seconds, and the seconds the whole took."""
    started = time.time()
    served = []
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        attacks = [pool.submit(attack) for _ in range(count)]
        while not all(a.done() for a in attacks):
            t = time.time()
            ids = c.client.generate(text=PROMPT, max_tokens=4, temperature=0.0, timeout=60)[0]
            served.append(time.time() - t)
            test.assertEqual(len(ids), 4)
            test.assertLess(time.time() - started, limit_s, "the attack did not end")
        codes = [a.result() for a in attacks]
    return codes, served, time.time() - started


class LargePromptTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-hardening-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_megabytes_of_spaces_do_not_starve_heartbeats(self):
        c = Cluster(self.tmp, "slow", self.model, world_size=2,
                    router_flags=["--heartbeat_timeout_s=2"])
        try:
            generation = c.client.status()["groups"][0]["generation"]
            spaces = " " * ((4 << 20) - 64)  # under the 4 MiB message limit

            def attack():
                try:
                    c.client.generate(text=spaces, max_tokens=1, timeout=60)
                except grpc.RpcError as e:
                    return e.code()
                return None

            # Three rounds of six.
            codes, served, _ = attack_while_serving(self, c, attack, 18, 120)
            self.assertEqual(codes, [grpc.StatusCode.INVALID_ARGUMENT] * 18)
            self.assertGreater(len(served), 0)
            status = c.client.status()["groups"][0]
            self.assertTrue(status["ready"])
            self.assertEqual(status["generation"], generation, c.all_logs())
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_prompts_slow_to_tokenize_wait_in_their_own_lane(self):
        # A context long enough that MiBs of spaces are tokenized in full.
        model = make_model(os.path.join(self.tmp, "long"),
                           extra=["--max_position_embeddings=1048576"])
        c = Cluster(self.tmp, "lane", model, world_size=2,
                    router_flags=["--max_model_len=1048576", "--heartbeat_timeout_s=2"])
        try:
            generation = c.client.status()["groups"][0]["generation"]
            spaces = " " * (3 << 20)

            def attack():
                # Refused only after tokenizing: a stop token id outside
                # the vocabulary is checked once the prompt is tokenized.
                try:
                    c.client.generate(text=spaces, max_tokens=1, stop_token_ids=[5000],
                                      timeout=120)
                except grpc.RpcError as e:
                    return e.code()
                return None

            codes, served, took = attack_while_serving(self, c, attack, 6, 240)
            # Four per client wait in the large lane; the others are told to
            # retry.
            self.assertEqual(codes.count(grpc.StatusCode.INVALID_ARGUMENT), 4)
            self.assertEqual(codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED), 2)
            self.assertGreater(took, 2, "the prompts were not slow to tokenize")
            # Small requests were served while the large lane worked.
            self.assertGreaterEqual(len(served), 2)
            self.assertLess(max(served), 2, served)
            status = c.client.status()["groups"][0]
            self.assertTrue(status["ready"])
            self.assertEqual(status["generation"], generation, c.all_logs())
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())

    def test_text_longer_than_the_context_can_hold_is_refused_by_its_length(self):
        c = Cluster(self.tmp, "short", self.model, world_size=1,
                    router_flags=["--max_model_len=64"])
        try:
            started = time.time()
            with self.assertRaises(grpc.RpcError) as e:
                c.client.generate(text=" " * (3 << 20), max_tokens=1)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("bytes, more than", e.exception.details())
            self.assertLess(time.time() - started, 2)
            self.assertEqual(len(c.client.generate(text=PROMPT, max_tokens=4)[0]), 4)
        finally:
            codes = c.stop()
        self.assertEqual(codes, [0] * len(codes), c.all_logs())


class IdleConnectionTest(unittest.TestCase):
    def test_connections_that_never_handshake_are_closed(self):
        tmp = tempfile.mkdtemp(prefix="shift-idle-")
        model = make_model(os.path.join(tmp, "model"))
        c = Cluster(tmp, "idle", model, world_size=1, router_flags=["--handshake_timeout_s=1"])
        try:
            for port in (c.port, c.internal_port):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
                    started = time.time()
                    # The server's HTTP/2 settings may come first; then the
                    # router closes the connection (recv gives b"").
                    while idle.recv(4096):
                        pass
                    self.assertLess(time.time() - started, 5)
            self.assertEqual(len(c.client.generate(text=PROMPT, max_tokens=4)[0]), 4)
        finally:
            codes = c.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(codes, [0] * len(codes))


if __name__ == "__main__":
    unittest.main()
