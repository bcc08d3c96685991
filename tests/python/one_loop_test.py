"""shift-generate and shift-router run one step loop (core/step_loop.h).

A P = 2 router with chunked prefill, a low shift threshold and a KV cache
small enough to force preemption serves seven sampled requests (two share a
prompt prefix) and writes its step trace: a long one first, then, once it
streams, six at once, so that they meet it in the cache and preemption
happens however slowly the client's calls arrive. shift-generate then
runs the same requests on one rank, each queued before the step the
router's trace says it arrived before, with the same KV block count. Both
traces must hold the same steps: the same sequences with the same chunks,
the same modes, preemptions, releases and sampled tokens (only the timing
fields differ), and shift-generate's tokens must be the ones the router
streamed, also when it plans each step ahead of the previous one's results
(--async_scheduling), and so must a router that does. shift-sim, given the same requests and arrivals, runs the same
core loop on a virtual clock with a fixed step-time oracle for an executor:
its trace must hold the same steps too (its sampled token ids are its own;
which sequences sampled must agree).
"""

import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import GENERATE, SIM, Cluster, make_model  # noqa: E402
import shift_client  # noqa: E402  (on the path cluster sets)

# What differs between front ends: timing, and the request ids each gave.
TIMING = ("t", "predicted_s", "measured_s", "rank_s", "request_ids")
BLOCK = 16
BLOCKS = 10
FLAGS = ["--max_num_batched_tokens=32", "--max_num_seqs=8", "--shift_threshold=16",
         "--block_size=%d" % BLOCK]


def trace_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(lines):
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


class OneLoopTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="shift-one-loop-")
        self.model = make_model(os.path.join(self.tmp, "model"))
        with open(os.path.join(self.model, "config.json")) as f:
            config = json.load(f)
        # Bytes of one KV block on a rank holding `heads` kv heads.
        def block_bytes(heads):
            return (config["num_hidden_layers"] * 2 * BLOCK * heads * config["head_dim"] * 4)
        kv_heads = config["num_key_value_heads"]
        self.rank_bytes = BLOCKS * block_bytes(max(kv_heads // 2, 1))
        self.single_bytes = BLOCKS * block_bytes(kv_heads)
        self.cluster = None

    def tearDown(self):
        if self.cluster is not None:
            self.cluster.stop()
        if not os.environ.get("SHIFT_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def test_router_and_generate_write_the_same_steps(self):
        router_trace = os.path.join(self.tmp, "router.jsonl")
        self.cluster = Cluster(self.tmp, "loop", self.model, 2,
                               FLAGS + ["--step_trace=" + router_trace],
                               ["--block_size=%d" % BLOCK, "--kv_cache_bytes=%d" % self.rank_bytes])
        status = self.cluster.client.status()["groups"][0]
        self.assertEqual(status["kv_blocks_total"], BLOCKS)

        rng = random.Random(3)
        shared = [rng.randrange(1000) for _ in range(2 * BLOCK)]
        requests = []
        for i, length in enumerate([40, 45, 33, 50, 41, 38]):
            prompt = [rng.randrange(1000) for _ in range(length)]
            if i in (1, 4):
                prompt = shared + prompt[len(shared):]
            requests.append({"prompt_ids": prompt, "max_tokens": 16 + 2 * i,
                             "temperature": 0.8, "seed": 100 + i, "ignore_eos": True})
        # The long one: 140 tokens, 9 of the 10 blocks when it ends.
        requests.insert(0, {"prompt_ids": [rng.randrange(1000) for _ in range(40)],
                            "max_tokens": 100, "temperature": 0.8, "seed": 99,
                            "ignore_eos": True})

        def run(r, streaming=None):
            ids, final = [], None
            for raw in self.cluster.client.generate_stream(
                    token_ids=r["prompt_ids"], max_tokens=r["max_tokens"],
                    temperature=r["temperature"], seed=r["seed"], ignore_eos=True):
                msg = shift_client.decode_generate_response(raw)
                if "delta" in msg:
                    ids += msg["delta"]["token_ids"]
                    if streaming is not None:
                        streaming.set()
                else:
                    final = msg["final"]
            self.assertEqual(final["finish_reason"], "length")
            return ids

        def run_all():
            with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
                streaming = threading.Event()
                first = pool.submit(run, requests[0], streaming)
                self.assertTrue(streaming.wait(60), "the first request does not stream")
                rest = list(pool.map(run, requests[1:]))
                return [first.result()] + rest

        streamed = run_all()
        self.assertEqual(self.cluster.stop(), [0, 0, 0])
        self.cluster = None
        routed = trace_lines(router_trace)

        # What the loop did: chunked prefills, preemptions, both modes.
        self.assertTrue(any(line["preempted"] for line in routed), "no preemption")
        self.assertEqual({line["mode"] for line in routed}, {"tp", "sp"})
        self.assertTrue(any(n > 1 and start > 0 for line in routed
                            for _, start, n, _ in line["seqs"]), "no chunked prefill")

        # The router numbered the requests in arrival order; each one's
        # sampled tokens in the trace tell which request it was.
        outputs, arrival = {}, {}
        for line in routed:
            for seq_id, token in line["sampled"]:
                outputs.setdefault(seq_id, []).append(token)
            for seq_id in line["arrived"]:
                arrival.setdefault(seq_id, line["step"])
        by_tokens = {tuple(ids): i for i, ids in enumerate(streamed)}
        self.assertEqual(len(by_tokens), len(requests), "two requests streamed the same tokens")
        ordered = []
        for seq_id in sorted(outputs):
            i = by_tokens[tuple(outputs[seq_id])]
            ordered.append(dict(requests[i], arrive_before_step=arrival[seq_id]))
        self.assertEqual(len(ordered), len(requests))
        requests_file = os.path.join(self.tmp, "requests.jsonl")
        with open(requests_file, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in ordered)

        generate_trace = os.path.join(self.tmp, "generate.jsonl")
        out = subprocess.run(
            [GENERATE, "--model=" + self.model, "--requests=" + requests_file, "--threads=1",
             "--kv_cache_bytes=%d" % self.single_bytes, "--step_trace=" + generate_trace] + FLAGS,
            capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("%d KV blocks of %d tokens" % (BLOCKS, BLOCK), out.stderr)
        generated = [json.loads(line) for line in out.stdout.splitlines()]
        self.assertEqual([g["token_ids"] for g in generated],
                         [streamed[by_tokens[tuple(outputs[s])]] for s in sorted(outputs)])

        generated_steps = without_timing(trace_lines(generate_trace))
        routed_steps = without_timing(routed)
        self.assertEqual(len(generated_steps), len(routed_steps))
        for a, b in zip(routed_steps, generated_steps):
            self.assertEqual(a, b)

        # Planning each step ahead of the previous one's results: the same
        # tokens (decodes of pending tokens resolved by the engine; tokens
        # sampled past a sequence's end dropped), with steps planned ahead.
        ahead_trace = os.path.join(self.tmp, "ahead.jsonl")
        out = subprocess.run(
            [GENERATE, "--model=" + self.model, "--requests=" + requests_file, "--threads=1",
             "--kv_cache_bytes=%d" % self.single_bytes, "--step_trace=" + ahead_trace,
             "--async_scheduling"] + FLAGS,
            capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual([json.loads(line)["token_ids"] for line in out.stdout.splitlines()],
                         [g["token_ids"] for g in generated])
        ahead = trace_lines(ahead_trace)
        self.assertGreater(sum(line["ahead"] for line in ahead), len(ahead) // 2)
        self.assertFalse(any(line["ahead"] for line in routed))
        self.assertTrue(any(line["preempted"] for line in ahead), "no preemption planning ahead")

        # The router planning ahead: the same requests, the same tokens.
        ahead_router_trace = os.path.join(self.tmp, "router-ahead.jsonl")
        self.cluster = Cluster(self.tmp, "ahead", self.model, 2,
                               FLAGS + ["--step_trace=" + ahead_router_trace,
                                        "--async_scheduling"],
                               ["--block_size=%d" % BLOCK, "--kv_cache_bytes=%d" % self.rank_bytes])
        self.assertEqual(run_all(), streamed)
        self.assertEqual(self.cluster.stop(), [0, 0, 0])
        self.cluster = None
        routed_ahead = trace_lines(ahead_router_trace)
        self.assertGreater(sum(line["ahead"] for line in routed_ahead), len(routed_ahead) // 2)
        self.assertEqual({line["mode"] for line in routed_ahead}, {"tp", "sp"})

        # The simulator: the same loop, steps priced by a fixed oracle.
        sim_trace = os.path.join(self.tmp, "sim.jsonl")
        out = subprocess.run(
            [SIM, "--model=" + self.model, "--requests_jsonl=" + requests_file,
             "--step_time_s=0.001", "--num_blocks=%d" % BLOCKS, "--policy=threshold",
             "--step_trace=" + sim_trace] + FLAGS,
            capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)

        def without_tokens(lines):
            return [dict(line, sampled=[s for s, _ in line["sampled"]]) for line in lines]

        simulated = without_tokens(without_timing(trace_lines(sim_trace)))
        self.assertEqual(len(simulated), len(routed_steps))
        for a, b in zip(without_tokens(routed_steps), simulated):
            self.assertEqual(a, b)
        self.assertTrue(all(line["measured_s"] == 0.001 for line in trace_lines(sim_trace)))


if __name__ == "__main__":
    unittest.main()
