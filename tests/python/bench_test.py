"""shift-bench against a small live cluster on 127.0.0.1: its counts of
requests and tokens agree with the router's metrics, over gRPC and over the
OpenAI HTTP API (both endpoints), each trace format replays with the right
number of requests and lengths, and bad input is explained. Bounded in
time; every process is stopped."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import BIN, Cluster, make_model, metric  # noqa: E402

BENCH = os.path.join(BIN, "tools", "shift-bench")
TRACES = os.path.join(os.environ.get("SHIFT_SHARED_DATA", "../shared/data"), "traces")


class ShiftBenchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shift-bench-test-")
        cls.model = make_model(os.path.join(cls.tmp, "model"))
        # The generated model has no chat template: one that lists the messages.
        template = os.path.join(cls.tmp, "chat.jinja")
        with open(template, "w") as f:
            f.write("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}assistant:{% endif %}")
        # Not planning ahead: the router's time between steps is then on the
        # critical path, and its metric measurable (counts_agree).
        cls.cluster = Cluster(cls.tmp, "bench", cls.model, world_size=1,
                              router_flags=["--max_model_len=1024", "--http_port=0",
                                            "--chat_template=" + template,
                                            "--async_scheduling=false"])

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def bench(self, *flags, address=None, stderr=False):
        out = os.path.join(self.tmp, "report.json")
        run = subprocess.run([BENCH, "--address=" + (address or self.cluster.address),
                              "--json_out=" + out, "--progress=false"] + list(flags),
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(out) as f:
            return json.load(f), run.stderr if stderr else run.stdout

    def router_counts(self):
        text = self.cluster.metrics()
        finished = sum(metric(text, 'shift_requests_total{finish_reason="%s"}' % r) or 0
                       for r in ("length", "stop", "eos"))
        return (finished, metric(text, "shift_prompt_tokens_total"),
                metric(text, "shift_generation_tokens_total"))

    def test_counts_agree_with_the_router(self):
        before = self.router_counts()
        report, table = self.bench("--workload=poisson", "--rate=20", "--duration_s=2",
                                   "--input_tokens=40", "--output_tokens=8")
        after = self.router_counts()
        self.assertGreater(report["completed"], 10)
        self.assertEqual(report["failures"], {})
        self.assertEqual(report["completed"], after[0] - before[0])
        self.assertEqual(report["prompt_tokens"], after[1] - before[1])
        self.assertEqual(report["output_tokens"], after[2] - before[2])
        self.assertEqual(report["output_tokens"], 8 * report["completed"])
        self.assertIn("| TTFT |", table)
        plots = os.path.join(self.tmp, "plots")
        report, _ = self.bench("--workload=closed", "--concurrency=4", "--requests=12",
                               "--input_tokens=16", "--output_tokens=4", "--plot_dir=" + plots,
                               "--metrics_address=" + self.cluster.metrics_address)
        self.assertEqual(report["completed"], 12)
        self.assertEqual(self.router_counts()[0] - after[0], 12)
        # The router's cost per step, from its /metrics before and after.
        router = report["router"]
        self.assertGreater(router["steps"], 3)
        self.assertGreater(router["mean_step_s"], 0)
        self.assertGreater(router["mean_router_step_overhead_s"], 0)
        self.assertAlmostEqual(router["router_overhead_share_of_step"],
                               router["mean_router_step_overhead_s"] / router["mean_step_s"])
        with open(os.path.join(plots, "ttft_cdf.dat")) as f:
            self.assertEqual(len(f.readlines()), 12)
        if shutil.which("gnuplot"):
            for png in ("latency_cdf.png", "throughput.png", "ttft_over_time.png", "modes.png"):
                self.assertGreater(os.path.getsize(os.path.join(plots, png)), 1000, png)

    def test_openai_api_streams_both_endpoints(self):
        self.assertGreater(self.cluster.http_port, 0)
        http = "127.0.0.1:%d" % self.cluster.http_port
        for endpoint in ("completions", "chat"):
            before = self.router_counts()
            report, table = self.bench("--api=openai", "--endpoint=" + endpoint,
                                       "--workload=closed", "--concurrency=4", "--requests=12",
                                       "--input_tokens=24", "--output_tokens=6",
                                       "--metrics_address=" + self.cluster.metrics_address,
                                       address=http)
            after = self.router_counts()
            self.assertEqual(report["api"], "openai/" + endpoint)
            self.assertEqual(report["completed"], 12, endpoint)
            self.assertEqual(report["failures"], {}, endpoint)
            self.assertEqual(after[0] - before[0], 12, endpoint)
            # Token counts are the usage chunk's: as asked, and as the router counted.
            self.assertEqual(report["output_tokens"], 12 * 6, endpoint)
            self.assertEqual(after[2] - before[2], 12 * 6, endpoint)
            self.assertEqual(report["prompt_tokens"], after[1] - before[1], endpoint)
            for o in report["outcomes"]:
                self.assertEqual((o["code"], o["output_tokens"]), ("OK", 6), endpoint)
                self.assertTrue(0 < o["ttft"] <= o["e2e"], (endpoint, o))
                if endpoint == "completions":
                    self.assertEqual(o["prompt_tokens"], 24)
                else:  # a word a token, and the template's own tokens
                    self.assertTrue(24 <= o["prompt_tokens"] <= 96, o)
            # TTFT from the first chunk with text, inter-token latency per chunk.
            self.assertEqual(report["ttft_seconds"]["count"], 12, endpoint)
            # A gap per chunk with text after the first: at most 5 a request
            # (the last chunk, with the finish reason, and the role have none).
            self.assertGreater(report["itl_seconds"]["count"], 12, endpoint)
            self.assertLessEqual(report["itl_seconds"]["count"], 12 * 5, endpoint)
            self.assertGreater(report["itl_seconds"]["p50"], 0, endpoint)
            self.assertEqual(report["tpot_seconds"]["count"], 12, endpoint)
            self.assertIn("| TTFT |", table)
            self.assertGreater(report["router"]["steps"], 3, endpoint)
        # A model the server does not serve: every request fails, by its status.
        report, stderr = self.bench("--api=openai", "--served_model=nope", "--workload=closed",
                                    "--concurrency=2", "--requests=4", "--input_tokens=8",
                                    "--output_tokens=2", address=http,
                                    stderr=True)
        self.assertEqual((report["completed"], report["failures"]), (0, {"HTTP_404": 4}))
        self.assertIn("HTTP_404", stderr)
        self.assertIn("does not exist", stderr)

    def expected(self, rows, length_scale, max_out, max_prompt):
        def clamp(v, hi):  # lengths round half away from zero
            return max(1, min(int(math.floor(v / length_scale + 0.5)), hi))
        return ([clamp(i, max_prompt) for i, _ in rows], [clamp(o, max_out) for _, o in rows])

    def test_traces_replay_with_their_lengths(self):
        if not os.path.isdir(TRACES):
            self.skipTest("../shared/data/traces is absent")
        # Azure CSV: rows after the header.
        with open(os.path.join(TRACES, "AzureLLMInferenceTrace_code.csv")) as f:
            rows = [tuple(map(int, line.split(",")[1:])) for line in list(f)[1:21]]
        report, _ = self.bench("--workload=trace", "--requests=20", "--time_scale=100",
                               "--length_scale=16", "--max_output_tokens=16",
                               "--trace=" + os.path.join(TRACES, "AzureLLMInferenceTrace_code.csv"))
        prompts, outputs = self.expected(rows, 16, 16, 1024 - 16)
        got = sorted((o["start"], o["prompt_tokens"], o["output_tokens"])
                     for o in report["outcomes"])
        self.assertEqual(report["completed"], 20)
        self.assertEqual(sorted(p for _, p, _ in got), sorted(prompts))
        self.assertEqual(sorted(n for _, _, n in got), sorted(outputs))
        # Mooncake JSONL: shared hash ids become cached prefixes.
        with open(os.path.join(TRACES, "mooncake_conversation_trace.jsonl")) as f:
            rows = [json.loads(line) for line in list(f)[:30]]
        # 512-token blocks become 16 tokens: one router KV block each.
        report, _ = self.bench("--workload=trace", "--requests=30", "--time_scale=5",
                               "--length_scale=32", "--max_output_tokens=8",
                               "--trace=" + os.path.join(TRACES,
                                                         "mooncake_conversation_trace.jsonl"))
        prompts, outputs = self.expected([(r["input_length"], r["output_length"]) for r in rows],
                                         32, 8, 1024 - 8)
        self.assertEqual(report["completed"], 30)
        self.assertEqual(sorted(o["prompt_tokens"] for o in report["outcomes"]), sorted(prompts))
        self.assertEqual(sorted(o["output_tokens"] for o in report["outcomes"]), sorted(outputs))
        self.assertGreater(report["cached_prompt_tokens"], 0)

    def test_compare_runs_each_configuration_side_by_side(self):
        out = os.path.join(self.tmp, "compare")
        run = subprocess.run([BENCH, "--compare=tp,sp,shift,dp", "--model=" + self.model,
                              "--world_size=2", "--workload=poisson", "--rate=8",
                              "--duration_s=1.5", "--input_tokens=40", "--output_tokens=6",
                              "--plot_dir=" + out, "--progress=false"],
                             capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(os.path.join(out, "compare.json")) as f:
            report = json.load(f)
        self.assertEqual(sorted(report["configs"]), ["dp", "shift", "sp", "tp"])
        counts = {c: r["completed"] for c, r in report["configs"].items()}
        self.assertEqual(len(set(counts.values())), 1, counts)  # the same workload each time
        self.assertGreater(counts["tp"], 3)
        for config in ("tp", "sp", "shift", "dp"):
            self.assertIn("| %s |" % config, run.stdout)
            # Each router's --step_trace: one line per step, in its modes.
            with open(os.path.join(out, config, "steps.jsonl")) as f:
                steps = [json.loads(line) for line in f]
            self.assertGreater(len(steps), 5, config)
            # The router's metrics, scraped around the run, saw every step.
            self.assertEqual(report["configs"][config]["router"]["steps"], len(steps), config)
            modes = {s["mode"] for s in steps}
            self.assertEqual(modes, {"sp"} if config == "sp" else
                             {"tp"} if config in ("tp", "dp") else modes & {"tp", "sp"}, config)
            self.assertTrue(all(s["measured_s"] > 0 and s["tokens"] > 0 for s in steps), config)
            # The slowest rank's own time lies inside the router's
            # measurement, for a step sent once the one before had ended; a
            # step planned ahead (the default) is measured from the end of
            # the one before as the router saw it, which its ranks may see
            # earlier.
            bad = [s for s in steps if not 0 < s["rank_s"] <= s["measured_s"] + 1e-4 and
                   not (s["ahead"] and s["rank_s"] > 0)]
            self.assertEqual(bad, [], config)
            self.assertTrue(any(s["ahead"] for s in steps), config)
        if shutil.which("gnuplot"):
            self.assertGreater(os.path.getsize(os.path.join(out, "ttft_compare.png")), 1000)
        # Every process it started is gone.
        left = subprocess.run(["pgrep", "-f", "--", "--ports_file=" + out],
                              capture_output=True, text=True)
        self.assertEqual(left.stdout, "")

    def test_bad_input_is_explained(self):
        bad = os.path.join(self.tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"timestamp": 0, "input_length": 5, "output_length": 2}\n')
            f.write('{"timestamp": 1, "input_length": "five", "output_length": 2}\n')
        run = subprocess.run([BENCH, "--address=" + self.cluster.address, "--workload=trace",
                              "--trace=" + bad], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("bad.jsonl:2:", run.stderr)
        run = subprocess.run([BENCH, "--address=127.0.0.1:1", "--duration_s=1"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("cannot reach the router", run.stderr)
        run = subprocess.run([BENCH, "--address=" + self.cluster.address, "--workload=zigzag"],
                             capture_output=True, text=True, timeout=60)
        self.assertIn("unknown --workload", run.stderr)
        run = subprocess.run([BENCH, "--api=openai", "--address=127.0.0.1:1", "--duration_s=1"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("cannot reach the server", run.stderr)
        run = subprocess.run([BENCH, "--api=openai", "--compare=tp", "--model=" + self.model],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("drop --api=openai", run.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
