"""shift-generate, shift-router and shift-sim run one step loop (core/step_loop.h).

A P = 2 router with chunked prefill, a low shift threshold and a KV cache
small enough to force preemption serves seven sampled requests (two share a
prompt prefix) and writes its step trace: a long one first, then, once it
streams, six at once, so that they meet it in the cache and preemption
happens however slowly the client's calls arrive. shift-generate then runs
the same requests on one rank, each queued before the step the router's
trace says it arrived before, with the same KV block count. Both traces
must hold the same steps: the same sequences with the same chunks, the same
modes, preemptions, releases and sampled tokens (only the timing fields
differ), and shift-generate's tokens must be the ones the router streamed.
shift-sim, given the same requests and arrivals, runs the same core loop on
a virtual clock with a fixed step-time oracle for an executor: its trace
must hold the same steps too (its sampled token ids are its own; which
sequences sampled must agree).

The same again with each step planned while the one before runs
(--async_scheduling on all three): the router streams the same tokens, and
its trace, replayed, is the one shift-generate and shift-sim write.

At P = 4 the router gives the same tokens and log probabilities planning
ahead as not, with preemption, stop strings (nothing past a stop is
delivered), stop tokens and a cancelled stream among the requests, and
leaves no KV block in use.
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

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import GENERATE, SIM, Cluster, http_get, make_model, metric, read  # noqa: E402
import shift_client  # noqa: E402  (on the path cluster sets)

# What differs between front ends: timing, and the request ids each gave.
TIMING = ("t", "predicted_s", "measured_s", "rank_s", "plan_s", "request_ids",
          "budget_predicted_s")
BLOCK = 16
BLOCKS = 10
FLAGS = ["--max_num_batched_tokens=32", "--max_num_seqs=8", "--shift_threshold=16",
         "--block_size=%d" % BLOCK]


def trace_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(lines):
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def without_tokens(lines):
    return [dict(line, sampled=[s for s, _ in line["sampled"]]) for line in lines]


class OneLoopTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="shift-one-loop-")
        self.model = make_model(os.path.join(self.tmp, "model"))
        with open(os.path.join(self.model, "config.json")) as f:
            self.config = json.load(f)
        self.cluster = None

    def tearDown(self):
        if self.cluster is not None:
            self.cluster.stop()
        if not os.environ.get("SHIFT_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def kv_bytes(self, world_size):
        """Bytes of BLOCKS KV blocks on a rank of a group of `world_size`."""
        heads = max(self.config["num_key_value_heads"] // world_size, 1)
        return BLOCKS * self.config["num_hidden_layers"] * 2 * BLOCK * heads * \
            self.config["head_dim"] * 4

    def serve(self, name, world_size, flags):
        self.cluster = Cluster(self.tmp, name, self.model, world_size, FLAGS + flags,
                               ["--block_size=%d" % BLOCK,
                                "--kv_cache_bytes=%d" % self.kv_bytes(world_size)])
        self.assertEqual(self.cluster.client.status()["groups"][0]["kv_blocks_total"], BLOCKS)

    def stop(self):
        self.assertEqual(self.cluster.stop(), [0] * len(self.cluster.procs))
        self.cluster = None

    @staticmethod
    def requests():
        """The long request first (140 tokens, 9 of the 10 blocks when it
        ends), then six sampled ones; the second and fifth share a prefix."""
        rng = random.Random(3)
        shared = [rng.randrange(1000) for _ in range(2 * BLOCK)]
        requests = []
        for i, length in enumerate([40, 45, 33, 50, 41, 38]):
            prompt = [rng.randrange(1000) for _ in range(length)]
            if i in (1, 4):
                prompt = shared + prompt[len(shared):]
            requests.append({"prompt_ids": prompt, "max_tokens": 16 + 2 * i,
                             "temperature": 0.8, "seed": 100 + i, "ignore_eos": True})
        requests.insert(0, {"prompt_ids": [rng.randrange(1000) for _ in range(40)],
                            "max_tokens": 100, "temperature": 0.8, "seed": 99,
                            "ignore_eos": True})
        return requests

    def call(self, request, streaming=None, cancel_after=None):
        """Streams one Generate call: (token ids, text, final message, log
        probabilities); `streaming` is set at the first tokens. With
        `cancel_after`, the call is cancelled after that many messages and
        must end CANCELLED (final is None)."""
        ids, text, final, logprobs, messages = [], "", None, [], 0
        call = self.cluster.client.generate_stream(**request)
        try:
            for raw in call:
                msg = shift_client.decode_generate_response(raw)
                messages += 1
                if "delta" in msg:
                    ids += msg["delta"]["token_ids"]
                    text += msg["delta"]["text"]
                    logprobs += msg["delta"]["logprobs"]
                    if streaming is not None:
                        streaming.set()
                else:
                    final = msg["final"]
                if cancel_after is not None and messages == cancel_after:
                    call.cancel()
        except grpc.RpcError as e:
            self.assertIsNotNone(cancel_after, e)
            self.assertEqual(e.code(), grpc.StatusCode.CANCELLED)
            return ids, text, None, logprobs
        self.assertIsNone(cancel_after, "the call was not cancelled")
        return ids, text, final, logprobs

    def run_all(self, requests, others=()):
        """The first request alone until it streams, then the rest and
        `others` ((request, cancel_after) pairs) at once; the sampled
        requests' token ids, and the others' results."""
        with concurrent.futures.ThreadPoolExecutor(len(requests) + len(others)) as pool:
            streaming = threading.Event()
            first = pool.submit(self.call, sampled(requests, 0), streaming)
            self.assertTrue(streaming.wait(60), "the first request does not stream")
            rest = [pool.submit(self.call, sampled(requests, i)) for i in range(1, len(requests))]
            extra = [pool.submit(self.call, r, None, cancel) for r, cancel in others]
            results = [f.result() for f in [first] + rest]
            for _, _, final, _ in results:
                self.assertEqual(final["finish_reason"], "length")
            return [ids for ids, _, _, _ in results], [f.result() for f in extra]

    def replay(self, name, routed, streamed, requests):
        """The router's requests, each to arrive before the step its trace
        says it arrived before (in the order the router numbered them;
        after the step before ended when the router did not plan that step
        ahead), as a requests file; and the tokens each streamed, in that
        order. Each was sent as "request-<its index>"."""
        arrival, index, after_end = {}, {}, {}
        for line in routed:
            for seq_id in line["arrived"]:
                arrival.setdefault(seq_id, line["step"])
                # A step planned after the one before ended, not ahead of it:
                # the router had idled (nothing to plan ahead) and the
                # request came after that step's end.
                after_end.setdefault(seq_id, not line["ahead"])
            for seq_id, request_id in line["request_ids"].items():
                index[int(seq_id)] = int(request_id.split("-")[1])
        ordered, tokens = [], []
        for seq_id in sorted(arrival):
            i = index[seq_id]
            ordered.append(dict(requests[i], arrive_before_step=arrival[seq_id],
                                after_step_ended=after_end[seq_id]))
            tokens.append(streamed[i])
        self.assertEqual(len(ordered), len(requests))
        path = os.path.join(self.tmp, name + "-requests.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in ordered)
        return path, tokens

    def generate(self, requests_file, trace, flags=()):
        """shift-generate on one rank with the router's KV block count: its
        token ids per request, in order."""
        out = subprocess.run(
            [GENERATE, "--model=" + self.model, "--requests=" + requests_file, "--threads=1",
             "--kv_cache_bytes=%d" % self.kv_bytes(1), "--step_trace=" + trace] + FLAGS +
            list(flags), capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("%d KV blocks of %d tokens" % (BLOCKS, BLOCK), out.stderr)
        return [json.loads(line)["token_ids"] for line in out.stdout.splitlines()]

    def simulate(self, requests_file, trace, flags=()):
        out = subprocess.run(
            [SIM, "--model=" + self.model, "--requests_jsonl=" + requests_file,
             "--step_time_s=0.001", "--num_blocks=%d" % BLOCKS, "--policy=threshold",
             "--step_trace=" + trace] + FLAGS + list(flags),
            capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = trace_lines(trace)
        self.assertTrue(all(line["measured_s"] == 0.001 for line in lines))
        return lines

    def assert_same_steps(self, routed, other, tokens=True):
        a, b = without_timing(routed), without_timing(other)
        if not tokens:
            a, b = without_tokens(a), without_tokens(b)
        self.assertEqual(len(a), len(b))
        for x, y in zip(a, b):
            self.assertEqual(x, y)

    def test_router_generate_and_sim_write_the_same_steps(self):
        requests = self.requests()
        router_trace = os.path.join(self.tmp, "router.jsonl")
        self.serve("loop", 2, ["--step_trace=" + router_trace, "--async_scheduling=false"])
        streamed, _ = self.run_all(requests)
        self.stop()
        routed = trace_lines(router_trace)

        # What the loop did: chunked prefills, preemptions, both modes.
        self.assertTrue(any(line["preempted"] for line in routed), "no preemption")
        self.assertEqual({line["mode"] for line in routed}, {"tp", "sp"})
        self.assertTrue(any(n > 1 and start > 0 for line in routed
                            for _, start, n, _ in line["seqs"]), "no chunked prefill")
        self.assertFalse(any(line["ahead"] for line in routed))

        requests_file, tokens = self.replay("loop", routed, streamed, requests)
        generate_trace = os.path.join(self.tmp, "generate.jsonl")
        self.assertEqual(self.generate(requests_file, generate_trace), tokens)
        self.assert_same_steps(routed, trace_lines(generate_trace))
        sim_trace = os.path.join(self.tmp, "sim.jsonl")
        self.assert_same_steps(
            routed, self.simulate(requests_file, sim_trace, ["--async_scheduling=false"]),
            tokens=False)

        # Planning each step ahead of the previous one's results: the same
        # tokens (decodes of pending tokens resolved by the ranks; tokens
        # sampled past a sequence's end dropped), and one loop still.
        ahead_trace = os.path.join(self.tmp, "router-ahead.jsonl")
        self.serve("ahead", 2, ["--step_trace=" + ahead_trace, "--async_scheduling"])
        self.assertEqual(self.run_all(requests)[0], streamed)
        self.stop()
        routed = trace_lines(ahead_trace)
        self.assertGreater(sum(line["ahead"] for line in routed), len(routed) // 2)
        self.assertTrue(any(line["preempted"] for line in routed), "no preemption planning ahead")
        self.assertEqual({line["mode"] for line in routed}, {"tp", "sp"})

        requests_file, tokens = self.replay("ahead", routed, streamed, requests)
        generate_trace = os.path.join(self.tmp, "generate-ahead.jsonl")
        self.assertEqual(self.generate(requests_file, generate_trace, ["--async_scheduling"]),
                         tokens)
        self.assert_same_steps(routed, trace_lines(generate_trace))
        sim_trace = os.path.join(self.tmp, "sim-ahead.jsonl")
        self.assert_same_steps(
            routed, self.simulate(requests_file, sim_trace, ["--async_scheduling"]),
            tokens=False)

    def test_planning_ahead_gives_the_same_tokens_and_logprobs_at_p4(self):
        requests = self.requests()
        prompt = "Tensor or sequence parallel? Why not both, step by step."
        results = {}
        for ahead in (False, True):
            trace = os.path.join(self.tmp, "p4-%s.jsonl" % ahead)
            self.serve("p4-%s" % ahead, 4,
                       ["--step_trace=" + trace, "--async_scheduling=%s" % str(ahead).lower()])
            # Alone first: the greedy text, a stop string from its middle,
            # and a token to stop at.
            ids, text, _, _ = self.call({"text": prompt, "max_tokens": 24, "ignore_eos": True})
            run = max(text.split("\ufffd"), key=len)
            self.assertGreaterEqual(len(run), 3, text)
            stop = run[len(run) // 2 - 1:len(run) // 2 + 1]
            others = [
                ({"text": prompt, "max_tokens": 24, "ignore_eos": True, "top_logprobs": 3}, None),
                ({"text": prompt, "max_tokens": 24, "ignore_eos": True, "stop": [stop]}, None),
                ({"text": prompt, "max_tokens": 24, "ignore_eos": True,
                  "stop_token_ids": [ids[5]]}, None),
                ({"text": prompt, "max_tokens": 100, "ignore_eos": True}, 3),
            ]
            streamed, (greedy, stopped, stop_token, cancelled) = self.run_all(requests, others)
            self.assertEqual(greedy[0], ids)
            self.assertEqual(len(greedy[3]), len(ids))
            # Nothing past the stop string is delivered.
            self.assertEqual(stopped[2]["finish_reason"], "stop")
            self.assertEqual(stopped[2]["stop_string"], stop)
            self.assertEqual(stopped[1], text[:text.index(stop)])
            self.assertEqual(stop_token[2]["finish_reason"], "stop")
            self.assertEqual(stop_token[0], ids[:ids.index(ids[5]) + 1])
            self.assertIsNone(cancelled[2])
            self.cluster.assert_idle(self)
            self.stop()
            routed = trace_lines(trace)
            self.assertTrue(any(line["preempted"] for line in routed), "no preemption")
            self.assertEqual({line["mode"] for line in routed}, {"tp", "sp"})
            self.assertEqual(any(line["ahead"] for line in routed), ahead)
            # What must not depend on planning ahead (not the timings).
            results[ahead] = [streamed] + [
                (ids, text, final["finish_reason"], final["usage"]["completion_tokens"], logprobs)
                for ids, text, final, logprobs in (greedy, stopped, stop_token)]
        self.assertEqual(results[True], results[False])

    def test_a_latency_target_under_the_decodes_floor_runs_them_alone_and_says_so(self):
        # 0.1 ms: no step of the tiny model on these cores is that short.
        # Once the router's cost model predicts (16 TP steps), decodes run
        # alone, but a waiting prefill gets a block every 5th step at most.
        # The router's target, then each request's own with none for the
        # router.
        for name, flags, own in [("slo", ["--tpot_slo_ms=0.1"], 0), ("own", [], 0.1)]:
            with self.subTest(name):
                self.check_target_unmet(name, flags, own)

    def check_target_unmet(self, name, flags, own):
        trace = os.path.join(self.tmp, name + ".jsonl")
        self.serve(name, 2, flags + ["--step_trace=" + trace])
        requests = self.requests()
        for r in requests:
            r["tpot_slo_ms"] = own
        streamed, _ = self.run_all(requests)
        self.assertEqual([len(ids) for ids in streamed], [r["max_tokens"] for r in requests])
        self.cluster.assert_idle(self)
        text = http_get(self.cluster.metrics_address)
        self.assertGreater(metric(text, 'shift_step_budget_total{group="0",reason="target_unmet"}')
                           or 0, 0)
        self.stop()
        log = read(os.path.join(self.tmp, name + "-router.log"))
        self.assertEqual(log.count("event=tpot_target_unmet"), 1, log)
        self.assertIn("over the target of 0.1 ms", log)
        lines = trace_lines(trace)
        reasons = [line["budget_reason"] for line in lines]
        self.assertIn("target_unmet", reasons)
        self.assertIn("starvation", reasons)
        in_a_row = 0
        for line in lines:
            in_a_row = in_a_row + 1 if line["budget_reason"] == "target_unmet" else 0
            self.assertLessEqual(in_a_row, 4)
            if line["budget_reason"] == "target_unmet":
                self.assertEqual(line["budget"], 0)
                self.assertEqual(line["tokens"], line["decodes"])


def sampled(requests, i):
    """Request `i` of requests() as Generate's arguments."""
    r = requests[i]
    return {"token_ids": r["prompt_ids"], "max_tokens": r["max_tokens"],
            "temperature": r["temperature"], "seed": r["seed"], "ignore_eos": True,
            "request_id": "request-%d" % i, "tpot_slo_ms": r.get("tpot_slo_ms", 0)}


if __name__ == "__main__":
    unittest.main()
