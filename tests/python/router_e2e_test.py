"""End-to-end tests of shift-router with real worker processes on 127.0.0.1,
driven by an independent client (tools/python/shift_client.py: grpcio and a
hand-written wire codec, no generated stubs).

Two deployments of a tiny generated model:
  - a P = 2 group with a low shift threshold, so prefills run in SP and
    decodes in TP: greedy tokens must equal the single-rank engine's
    (shift-generate), bit for bit; 64 concurrent requests; cancellation,
    deadlines, invalid input; metrics checked with promtool;
  - a P = 1 group with a KV cache too small for its load and a short queue:
    preemption (same tokens after recompute) and RESOURCE_EXHAUSTED.
Every process started is stopped, and killed if it does not stop in time.
"""

import concurrent.futures
import json
import os
import random
import resource
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import (PROMTOOL, ROUTER, Cluster, http_get, make_model, metric,  # noqa: E402
                     read, reference_ids)
import shift_client  # noqa: E402  (on the path through cluster)

PROMPTS = [
    "The lighthouse keeper",
    "Tensor or sequence parallel? Why not both, step by step, as the load demands it.",
    "¿Por qué no los dos? 你好 🚀",
    "a",
    "Once upon a time, in a data center far away, a router scheduled every step of a "
    "worker group and chose for each one the mode that suited it best.",
]


class RouterE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-e2e-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))
        cls.shifting = None
        cls.small = None
        try:
            cls.shifting = Cluster(cls.tmp, "shifting", cls.model, 2, [
                "--shift_threshold=12", "--max_num_batched_tokens=48", "--max_num_seqs=32",
                "--max_queued_requests=256", "--max_model_len=512", "--block_size=8"],
                ["--block_size=8", "--kv_cache_bytes=4194304"])
            # 14 blocks of 16 tokens: two 120-token sequences cannot both fit.
            cls.small = Cluster(cls.tmp, "small", cls.model, 1, [
                "--max_queued_requests=2", "--max_num_seqs=4", "--max_model_len=512"],
                ["--kv_cache_bytes=%d" % (14 * 8192)])
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for d in (cls.shifting, cls.small):
            if d is not None:
                codes = d.stop()
                if codes != [0] * len(codes):
                    print("exit codes", codes, file=sys.stderr)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_greedy_tokens_equal_the_single_rank_engine_while_modes_shift(self):
        c = self.shifting.client
        for prompt in PROMPTS:
            want = reference_ids(self.model, prompt, 20)
            ids, text, final, _ = c.generate(text=prompt, max_tokens=20)
            self.assertEqual(ids, want, prompt)
            self.assertIn(final["finish_reason"], ("length", "eos"))
            self.assertEqual(final["usage"]["completion_tokens"], len(ids))
            self.assertGreater(final["usage"]["time_to_first_token_seconds"], 0)
        modes = c.status()["modes"]
        self.assertGreater(modes["tp_steps"], 0, modes)
        self.assertGreater(modes["sp_steps"], 0, modes)
        self.assertGreater(modes["switches"], 0, modes)
        text = http_get(self.shifting.metrics_address)
        self.assertGreater(metric(text, 'shift_steps_total{group="0",mode="tp"}'), 0)
        self.assertGreater(metric(text, 'shift_steps_total{group="0",mode="sp"}'), 0)
        self.assertGreater(metric(text, 'shift_mode_switches_total{group="0"}'), 0)

    def test_prompt_as_ids_stop_strings_and_logprobs(self):
        c = self.shifting.client
        prompt = PROMPTS[1]
        ids, text, final, _ = c.generate(text=prompt, max_tokens=20, ignore_eos=True)
        # A prompt given as token ids.
        prompt_ids = ids[:9] + [5, 17]
        self.assertEqual(c.generate(token_ids=prompt_ids, max_tokens=10, ignore_eos=True)[0],
                         reference_ids(self.model, prompt_ids, 10, ignore_eos=True))
        info = c.model_info()
        self.assertEqual(info["world_size"], 2)
        self.assertEqual(info["num_groups"], 1)
        self.assertEqual(info["shift_policy"], "threshold")
        # Every field of ModelInfo the client decodes is the model's.
        with open(os.path.join(self.model, "config.json")) as f:
            config = json.load(f)
        for field, key in (("num_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"),
                           ("num_heads", "num_attention_heads"),
                           ("num_kv_heads", "num_key_value_heads"), ("vocab_size", "vocab_size")):
            self.assertEqual(info[field], config[key], field)
        self.assertEqual(info["head_dim"],
                         config.get("head_dim", config["hidden_size"] // config["num_attention_heads"]))
        # Stop at a piece of the text: it is not returned.
        # A stop string from the text's longest run of whole characters.
        run = max(text.split("\ufffd"), key=len)
        self.assertGreaterEqual(len(run), 3, text)
        stop = run[len(run) // 2 - 1:len(run) // 2 + 1]
        cut = text.index(stop)
        _, stopped_text, stopped, _ = c.generate(text=prompt, max_tokens=20, stop=[stop],
                                                 ignore_eos=True)
        self.assertEqual(stopped["finish_reason"], "stop")
        self.assertEqual(stopped["stop_string"], stop)
        self.assertEqual(stopped_text, text[:cut])
        # A stop token id ends generation and is returned.
        _, _, by_id, _ = c.generate(text=prompt, max_tokens=20, stop_token_ids=[ids[3]],
                                    ignore_eos=True)
        self.assertEqual(by_id["finish_reason"], "stop")
        self.assertLessEqual(by_id["usage"]["completion_tokens"], 4)
        # Log probabilities: one per token, the sampled one among the best.
        lp_ids, _, _, deltas = c.generate(text=prompt, max_tokens=5, top_logprobs=3,
                                          ignore_eos=True)
        self.assertEqual(lp_ids, ids[:5])
        logprobs = [lp for d in deltas for lp in d["logprobs"]]
        self.assertEqual(len(logprobs), 5)
        for token, lp in zip(lp_ids, logprobs):
            self.assertEqual(lp["token_id"], token)
            self.assertLessEqual(lp["logprob"], 0.0)
            self.assertEqual(len(lp["top"]), 3)
            self.assertEqual(lp["top"][0][0], token)  # greedy: the best one
            self.assertAlmostEqual(lp["top"][0][1], lp["logprob"], places=5)
        # Seeded sampling is reproducible.
        a = c.generate(text=prompt, max_tokens=12, temperature=0.8, top_p=0.9, seed=42)[0]
        b = c.generate(text=prompt, max_tokens=12, temperature=0.8, top_p=0.9, seed=42)[0]
        self.assertEqual(a, b)

    def worker_tokens(self):
        """KV tokens computed by rank 0 so far (both modes)."""
        group = self.shifting.client.status()["groups"][0]
        text = http_get(group["ranks"][0]["metrics_address"])
        return sum(metric(text, 'shift_worker_step_tokens_total{mode="%s"}' % m) or 0
                   for m in ("tp", "sp"))

    def test_shared_prefixes_are_computed_once_and_give_the_same_bits(self):
        c = self.shifting.client
        rng = random.Random(99)
        first = [rng.randint(10, 1000) for _ in range(100)]  # 12 full blocks of 8, and 4
        _, _, final, _ = c.generate(token_ids=first, max_tokens=4, ignore_eos=True)
        self.assertEqual(final["usage"]["cached_prompt_tokens"], 0)
        # Same 96-token prefix, then 5 new tokens (a TP step) or 30 (an SP step).
        for suffix in ([5, 6, 7, 8, 9], [rng.randint(10, 1000) for _ in range(30)]):
            prompt = first[:96] + suffix
            before = self.worker_tokens()
            ids, _, final, _ = c.generate(token_ids=prompt, max_tokens=4, ignore_eos=True)
            computed = self.worker_tokens() - before
            self.assertEqual(final["usage"]["cached_prompt_tokens"], 96)
            # The ranks were sent only the new tokens, then 3 decodes.
            self.assertEqual(computed, len(suffix) + 3)
            self.assertEqual(ids, reference_ids(self.model, prompt, 4, ignore_eos=True))
        text = http_get(self.shifting.metrics_address)
        self.assertGreaterEqual(metric(text, "shift_prefix_cache_hit_tokens_total"), 192)

    def test_64_concurrent_requests_of_mixed_lengths(self):
        c = self.shifting.client
        rng = random.Random(3)
        cases = []
        for i in range(64):
            prompt = PROMPTS[i % len(PROMPTS)] * rng.randint(1, 3)
            cases.append((prompt, rng.randint(1, 24)))
        refs = {}
        for prompt, n in cases:
            key = (prompt, 24)
            if key not in refs:
                refs[key] = reference_ids(self.model, prompt, 24)
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(
                lambda case: c.generate(text=case[0], max_tokens=case[1]), cases))
        for (prompt, n), (ids, _, final, _) in zip(cases, results):
            want = refs[(prompt, 24)][:n]
            if final["finish_reason"] == "eos":
                want = want[:len(ids)]
            self.assertEqual(ids, want, (prompt, n))
        self.shifting.assert_idle(self)

    def test_idle_time_is_not_step_overhead(self):
        # shift_router_step_overhead_seconds counts the loop's own work
        # between back-to-back steps, never a wait for requests.
        c = self.small
        def overhead():
            return metric(http_get(c.metrics_address), "shift_router_step_overhead_seconds_sum")
        c.client.generate(text=PROMPTS[0], max_tokens=4, ignore_eos=True)
        c.assert_idle(self)
        before = overhead()
        time.sleep(1.5)
        c.client.generate(text=PROMPTS[0], max_tokens=4, ignore_eos=True)
        self.assertLess(overhead() - before, 0.5)

    def test_cancellation_and_deadline_leave_others_unharmed(self):
        c = self.shifting.client
        prompt = PROMPTS[0]
        want = reference_ids(self.model, prompt, 16)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            other = pool.submit(c.generate, text=prompt, max_tokens=16)
            call = c.generate_stream(text=PROMPTS[4], max_tokens=400, ignore_eos=True)
            got = 0
            for _ in call:
                got += 1
                if got == 3:
                    call.cancel()
                    break
            with self.assertRaises(grpc.RpcError) as cancelled:
                for _ in call:
                    pass
            self.assertEqual(cancelled.exception.code(), grpc.StatusCode.CANCELLED)
            with self.assertRaises(grpc.RpcError) as late:
                c.generate(timeout=0.3, text=PROMPTS[4], max_tokens=400, ignore_eos=True)
            self.assertEqual(late.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertEqual(other.result()[0], want)
        self.shifting.assert_idle(self)
        text = http_get(self.shifting.metrics_address)
        self.assertGreaterEqual(metric(text, 'shift_request_errors_total{code="CANCELLED"}'), 1)
        self.assertGreaterEqual(
            metric(text, 'shift_request_errors_total{code="DEADLINE_EXCEEDED"}'), 1)

    def test_invalid_requests_are_refused_and_others_go_on(self):
        c = self.shifting.client
        prompt = PROMPTS[0]
        want = reference_ids(self.model, prompt, 12)
        bad = [
            dict(text=""),
            dict(token_ids=[]),
            dict(text=prompt, max_tokens=0),
            dict(text=prompt, max_tokens=600),  # over --max_model_len
            dict(text=prompt, temperature=-1.0),
            dict(text=prompt, top_p=1.5),
            dict(token_ids=[1, 5, 1024]),  # vocab is 1024
            dict(text=prompt, stop=[""]),
            dict(text=prompt, stop_token_ids=[5000]),
            dict(text=prompt, top_logprobs=21),
            # Invalid UTF-8 used to get UNIMPLEMENTED with no message.
            dict(text=b"caf\xc3"),
            dict(text=prompt, stop=[b"\xff\xfe"]),
            dict(text=prompt, request_id="\u00e9" * 200),
            # Memory bounds: stop strings, their bytes, stop ids.
            dict(text=prompt, stop=["s%d" % i for i in range(17)]),
            dict(text=prompt, stop=["x" * 4097]),
            dict(text=prompt, stop_token_ids=list(range(65))),
            # A time-per-output-token target out of [0.1, 600000] ms.
            dict(text=prompt, tpot_slo_ms=0.05),
            dict(text=prompt, tpot_slo_ms=-1.0),
            dict(text=prompt, tpot_slo_ms=700000.0),
            dict(text=prompt, tpot_slo_ms=float("nan")),
        ]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            good = pool.submit(c.generate, text=prompt, max_tokens=12)
            for request in bad:
                request.setdefault("max_tokens", 8)
                with self.assertRaises(grpc.RpcError) as e:
                    c.generate(**request)
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, request)
                self.assertTrue(e.exception.details(), request)
            self.assertEqual(good.result()[0], want)
        # A target in range is served (greedy: the same tokens).
        self.assertEqual(c.generate(text=prompt, max_tokens=12, tpot_slo_ms=50.0)[0], want)
        # The refused value as sent, not rounded to the value allowed.
        with self.assertRaises(grpc.RpcError) as e:
            c.generate(text=prompt, max_tokens=4, top_p=1.0000001)
        self.assertIn("got 1.00000012", e.exception.details())
        # A message over --max_request_bytes (4 MiB) is refused whole.
        with self.assertRaises(grpc.RpcError) as e:
            c.generate(text="a" * (5 << 20), max_tokens=4)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Garbage bytes are not a request either, and the server stays up.
        raw = c.channel.unary_stream("/shift.v1.Generation/Generate")
        with self.assertRaises(grpc.RpcError):
            for _ in raw(b"\xff\xff\xff\xff", timeout=10):
                pass
        self.assertEqual(c.generate(text=prompt, max_tokens=12)[0], want)

    def test_preemption_keeps_tokens_and_full_queue_is_refused(self):
        c = self.small.client
        prompt = PROMPTS[4]  # about 40 tokens
        # 40 + 120 tokens are 10 blocks, the first 2 shared through the
        # prefix cache: any two of these requests that overlap need 18 of the
        # 14 blocks, so one is preempted even when a loaded machine starts
        # the third late.
        want = reference_ids(self.model, prompt, 120, ignore_eos=True)
        # A loaded machine can still run the three one after the other (each
        # takes a fraction of a second), so the burst is repeated, a few
        # times at most, until two of them overlap; every run's tokens count.
        for _ in range(5):
            start = threading.Barrier(3)

            def one(_):
                start.wait(timeout=30)
                # Three arriving at once can meet a queue of 2 that the loop
                # has not admitted from yet: "retry later", as clients do.
                for _ in range(100):
                    try:
                        return c.generate(text=prompt, max_tokens=120, ignore_eos=True)
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        time.sleep(0.05)
                return c.generate(text=prompt, max_tokens=120, ignore_eos=True)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                results = list(pool.map(one, range(3)))
            for ids, _, final, _ in results:
                self.assertEqual(final["finish_reason"], "length")
                self.assertEqual(ids, want)
            text = http_get(self.small.metrics_address)
            if metric(text, "shift_preemptions_total") > 0:
                break
        self.assertGreater(metric(text, "shift_preemptions_total"), 0)
        self.small.assert_idle(self)
        # Queue of 2: of many long requests at once, some are refused. They
        # leave together (a barrier); a loaded machine may still spread
        # them out enough for the loop to keep up, so the burst is repeated
        # a few times at most.
        codes = []
        for _ in range(5):
            start = threading.Barrier(12)

            def one(_):
                start.wait(timeout=30)
                try:
                    c.generate(text=prompt, max_tokens=60, ignore_eos=True)
                    return "OK"
                except grpc.RpcError as e:
                    return e.code().name
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                codes = list(pool.map(one, range(12)))
            self.assertEqual(set(codes) - {"OK", "RESOURCE_EXHAUSTED"}, set(), codes)
            if "RESOURCE_EXHAUSTED" in codes:
                break
            self.small.assert_idle(self)
        self.assertIn("RESOURCE_EXHAUSTED", codes)
        self.assertIn("OK", codes)
        self.small.assert_idle(self)

    def test_shiftctl(self):
        ctl = os.path.join(os.environ.get("SHIFT_BINARY_DIR", "build"), "tools", "shiftctl")
        address = "--address=" + self.shifting.address

        def run(*args):
            return subprocess.run([ctl, address] + list(args), capture_output=True, text=True,
                                  timeout=60)
        prompt = PROMPTS[1]
        _, text, _, _ = self.shifting.client.generate(text=prompt, max_tokens=12, ignore_eos=True)
        out = run("generate", "--prompt=" + prompt, "--max_tokens=12", "--ignore_eos")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, text + "\n")
        self.assertIn("FINISH_REASON_LENGTH", out.stderr)
        out = run("--json", "generate", "--prompt=" + prompt, "--max_tokens=3", "--logprobs=2")
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        self.assertIn("final", lines[-1])
        self.assertEqual(len(lines[0]["delta"]["logprobs"][0]["top"]), 2)
        self.assertEqual(run("health").stdout, "SERVING\n")
        self.assertIn("group 0: ready", run("status").stdout)
        self.assertEqual(json.loads(run("--json", "model").stdout)["world_size"], 2)
        # status --json: every rank has its rank, 0 included, and 64-bit
        # fields are numbers, not the strings proto's JSON mapping writes.
        status = json.loads(run("--json", "status").stdout)
        ranks = status["groups"][0]["ranks"]
        self.assertEqual([r["rank"] for r in ranks], [0, 1])
        for r in ranks:
            self.assertIsInstance(r["weight_bytes"], int)
            self.assertGreater(r["weight_bytes"], 0)
        self.assertIsInstance(status["groups"][0]["generation"], int)
        self.assertIsInstance(status["modes"]["tp_steps"], int)
        # --stop as a JSON array keeps a stop string's comma: "piece,zzz" is
        # one stop that never appears, where split at the comma its "piece"
        # would end the text early.
        piece = text[4:7]
        self.assertNotIn(",", piece)
        whole = run("generate", "--prompt=" + prompt, "--max_tokens=12", "--ignore_eos",
                    "--stop=" + json.dumps([piece + ",zzz"]))
        self.assertEqual(whole.returncode, 0, whole.stderr)
        self.assertEqual(whole.stdout, text + "\n")
        cut = run("generate", "--prompt=" + prompt, "--max_tokens=12", "--ignore_eos",
                  "--stop=%s,zzz" % piece)
        self.assertEqual(cut.stdout, text[:text.index(piece)] + "\n")
        bad = run("generate", "--prompt=" + prompt, "--stop=[1, 2]")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("JSON array of strings", bad.stderr)
        refused = run("generate", "--prompt=")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("the request was refused: the prompt is empty", refused.stderr)
        nobody = subprocess.run([ctl, "--address=127.0.0.1:1", "status"], capture_output=True,
                                text=True, timeout=60)
        self.assertEqual(nobody.returncode, 1)
        self.assertIn("is unavailable", nobody.stderr)
        self.assertEqual(run("frob").returncode, 2)

    def test_without_a_group_requests_are_unavailable(self):
        ports = os.path.join(self.tmp, "lonely.ports")
        router = subprocess.Popen(
            [ROUTER, "--model=" + self.model, "--host=127.0.0.1", "--port=0", "--metrics_port=0",
             "--internal_port=0",
             "--ports_file=" + ports, "--world_size=2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            # Started with a low soft limit on open files, as many systems set it.
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
        try:
            deadline = time.time() + 30
            while not (os.path.exists(ports) and read(ports).endswith("\n")):
                self.assertLess(time.time(), deadline, "the router did not start")
                time.sleep(0.05)
            # Idle connections alone reach 1,024: the router raises its soft
            # limit to the hard one.
            limits = read("/proc/%d/limits" % router.pid)
            soft, hard = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.M).groups()
            self.assertEqual(soft, hard)
            fields = dict(kv.split("=") for kv in read(ports).split())
            c = shift_client.Client("127.0.0.1:" + fields["grpc"])
            self.assertEqual(c.health(), 2)  # NOT_SERVING
            with self.assertRaises(grpc.RpcError) as e:
                c.generate(text="hello", max_tokens=4)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("no worker group is ready", e.exception.details())
            self.assertFalse(c.status()["groups"][0]["ready"])
        finally:
            router.send_signal(signal.SIGTERM)
            try:
                self.assertEqual(router.wait(timeout=15), 0)
            except subprocess.TimeoutExpired:
                router.kill()
                router.wait()
                raise

    def test_operator_series_follow_a_known_workload(self):
        d = self.shifting
        before = http_get(d.metrics_address)
        n, m = 3, 6
        prompt = "the same prompt, long enough to fill more than one KV block of tokens " * 3
        for _ in range(n):
            d.client.generate(text=prompt, max_tokens=m, ignore_eos=True)
        after = http_get(d.metrics_address)

        def delta(series):
            return (metric(after, series) or 0) - (metric(before, series) or 0)
        self.assertEqual(delta("shift_request_generation_tokens_count"), n)
        self.assertEqual(delta("shift_request_generation_tokens_sum"), n * m)
        self.assertEqual(delta("shift_inter_token_latency_seconds_count"), n * (m - 1))
        self.assertGreater(delta("shift_inter_token_latency_seconds_sum"), 0)
        self.assertEqual(delta("shift_request_prefill_time_seconds_count"), n)
        self.assertEqual(delta("shift_request_decode_time_seconds_count"), n)
        self.assertGreater(delta("shift_request_decode_time_seconds_sum"), 0)
        self.assertEqual(delta("shift_request_prompt_tokens_count"), n)
        prompt_tokens = delta("shift_request_prompt_tokens_sum") / n
        self.assertGreater(prompt_tokens, 32)
        # Every prompt is looked up; the second and third hit the first's blocks.
        queried = delta("shift_prefix_cache_queried_tokens_total")
        hits = delta("shift_prefix_cache_hit_tokens_total")
        self.assertEqual(queried, n * prompt_tokens)
        self.assertGreater(hits, 0)
        self.assertLess(hits, queried)
        # The threshold under its new name, and the old one for a release.
        self.assertIsNotNone(metric(after, "shift_threshold_tokens"))
        self.assertEqual(metric(after, "shift_threshold_tokens"),
                         metric(after, "shift_shift_threshold_tokens"))
        # Request series carry the served model's name (the directory's, as
        # vLLM's model_name) and the group that ran them; every router series
        # carries the model.
        model = os.path.basename(d.model.rstrip("/"))
        for series in ("shift_request_generation_tokens_count", "shift_requests_total",
                       "shift_time_to_first_token_seconds_count", "shift_prompt_tokens_total"):
            self.assertEqual(delta('%s{model_name="%s",group="0"}' % (series, model)),
                             n if "tokens_total" not in series else delta(series), series)
        samples = [line for line in after.splitlines()
                   if line.startswith("shift_") and not line.startswith("#")]
        self.assertTrue(samples)
        for line in samples:
            self.assertIn('model_name="%s"' % model, line)

    def test_ranks_count_the_routers_turn_around_not_idle_time(self):
        d = self.shifting
        rank0 = d.client.status()["groups"][0]["ranks"][0]["metrics_address"]
        before = http_get(rank0)
        time.sleep(1.5)  # idle: not a gap
        d.client.generate(text="one request after a pause", max_tokens=5, ignore_eos=True)
        after = http_get(rank0)

        def delta(series):
            return (metric(after, series) or 0) - (metric(before, series) or 0)
        # Five steps (a prefill, then four decodes); the first followed a wait
        # for work, the other four their predecessor.
        self.assertEqual(delta("shift_worker_step_gap_seconds_count"), 4)
        self.assertGreater(delta("shift_worker_step_gap_seconds_sum"), 0)
        self.assertLess(delta("shift_worker_step_gap_seconds_sum"), 1.0)

    def test_health_status_and_metrics_pass_promtool(self):
        d = self.shifting
        self.assertEqual(d.client.health(), 1)
        self.assertEqual(d.client.health("shift.v1.Generation"), 1)
        services = d.client.list_services()
        for name in ("shift.v1.Generation", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(name, services)
        status = d.client.status()
        group = status["groups"][0]
        self.assertTrue(group["ready"])
        self.assertEqual(len(group["ranks"]), 2)
        self.assertTrue(all(r["connected"] for r in group["ranks"]))
        self.assertGreater(group["kv_blocks_total"], 0)
        texts = [http_get(d.metrics_address)] + [
            http_get(r["metrics_address"]) for r in group["ranks"]]
        for name in ["shift_requests_total", "shift_request_errors_total", "shift_queue_depth",
                     "shift_running_sequences", "shift_kv_blocks_used", "shift_kv_blocks_capacity",
                     "shift_prompt_tokens_total", "shift_generation_tokens_total",
                     "shift_time_to_first_token_seconds", "shift_time_per_output_token_seconds",
                     "shift_e2e_request_latency_seconds", "shift_queue_time_seconds",
                     "shift_step_tokens", "shift_step_duration_seconds", "shift_steps_total",
                     "shift_mode_switches_total", "shift_preemptions_total", "shift_mode",
                     "shift_prefix_cache_hit_tokens_total", "shift_kv_blocks_cached",
                     "shift_router_step_overhead_seconds", "shift_inter_token_latency_seconds",
                     "shift_request_prefill_time_seconds", "shift_request_decode_time_seconds",
                     "shift_request_prompt_tokens", "shift_request_generation_tokens",
                     "shift_prefix_cache_queried_tokens_total", "shift_threshold_tokens",
                     "process_resident_memory_bytes", "process_cpu_seconds_total"]:
            self.assertIn("# TYPE %s " % name, texts[0])
        if os.access(PROMTOOL, os.X_OK):
            for text in texts:
                check = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                       capture_output=True, text=True, timeout=30)
                self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
