#!/usr/bin/python3
"""The shift policies side by side on one CPU worker group: the same mixed
workload (Poisson arrivals; a mix of short chats and long prompts, so steps
range from a few decodes to large prefills) against a router run with
--shift_policy=threshold, cost, tp and sp in turn. Reports TTFT, TPOT and
end-to-end latency, throughput, the modes chosen, and for `cost` how far
its predicted step times were from the measured ones. A benchmark, not a
test; loopback only, bounded in time.

    tests/bench/policy_bench.py [--rate=4] [--seconds=30] [--policies=threshold,cost,tp,sp]
"""

import argparse
import concurrent.futures
import os
import random
import re
import shutil
import sys
import tempfile
import time

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from cluster import Cluster, make_model, metric  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))] if values else float("nan")


def histogram(text, name):
    """{le: cumulative count} of a Prometheus histogram."""
    out = {}
    for le, value in re.findall(r'^%s_bucket\{le="([^"]+)"\} (\S+)$' % name, text, re.M):
        out[le] = float(value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=4, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--policies", default="threshold,cost,tp,sp")
    parser.add_argument("--world_size", type=int, default=2)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--trace_dir", default="",
                        help="keep each router's --step_trace here as POLICY.jsonl")
    args = parser.parse_args()
    os.environ.setdefault("SHIFT_BINARY_DIR", os.path.join(ROOT, "build"))
    tmp = tempfile.mkdtemp(prefix="shift-policy-")
    try:
        model = make_model(os.path.join(tmp, "model"), extra=[
            "--hidden_size=%d" % args.hidden_size, "--num_layers=%d" % args.layers,
            "--num_heads=8", "--num_kv_heads=4", "--head_dim=%d" % (args.hidden_size // 8),
            "--intermediate_size=%d" % (3 * args.hidden_size), "--vocab_size=4096",
            "--dtype=fp32"])
        rng = random.Random(5)
        workload, t = [], 0.0
        while t < args.seconds:
            t += rng.expovariate(args.rate)
            long = rng.random() < 0.25
            prompt = [rng.randint(10, 4000) for _ in range(rng.randint(300, 900) if long
                                                             else rng.randint(10, 60))]
            workload.append((t, prompt, rng.randint(16, 64)))
        print("P=%d, hidden %d, %d layers, 8/4 heads x %d; %d requests over %.0f s (Poisson, "
              "25%% with 300-900-token prompts, the rest 10-60; 16-64 tokens out)" %
              (args.world_size, args.hidden_size, args.layers, args.hidden_size // 8,
               len(workload), args.seconds))
        print("| policy | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | e2e p99 | tokens/s | "
              "TP steps | SP steps | switches |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        notes = []
        for policy in args.policies.split(","):
            cluster = Cluster(tmp, policy, model, world_size=args.world_size,
                              router_flags=["--shift_policy=" + policy,
                                            "--max_num_batched_tokens=1024"] +
                              (["--step_trace=" + os.path.join(os.path.abspath(args.trace_dir),
                                                               policy + ".jsonl")]
                               if args.trace_dir else []),
                              worker_flags=["--threads=1", "--kv_cache_bytes=268435456"])
            try:
                start = time.time()

                def send(item):
                    at, prompt, out = item
                    time.sleep(max(0.0, start + at - time.time()))
                    t0 = time.time()
                    first, n = None, 0
                    try:
                        for raw in cluster.client.generate_stream(
                                timeout=300, token_ids=prompt, max_tokens=out, ignore_eos=True):
                            if first is None:
                                first = time.time()
                            n += 1
                    except grpc.RpcError as e:
                        return None, e.code().name
                    end = time.time()
                    return (first - t0, (end - first) / max(1, out - 1), end - t0, out), None

                with concurrent.futures.ThreadPoolExecutor(256) as pool:
                    results = list(pool.map(send, workload))
                elapsed = time.time() - start
                ok = [r for r, err in results if r]
                failed = [err for r, err in results if err]
                text = cluster.metrics()
                steps = {m: metric(text, 'shift_steps_total{group="0",mode="%s"}' % m) or 0
                         for m in ("tp", "sp")}
                switches = metric(text, 'shift_mode_switches_total{group="0"}') or 0
                print("| %s | %.0f ms | %.0f ms | %.1f ms | %.1f ms | %.2f s | %.0f | %d | %d | "
                      "%d |" % (policy, 1000 * pct([r[0] for r in ok], 50),
                               1000 * pct([r[0] for r in ok], 99),
                               1000 * pct([r[1] for r in ok], 50),
                               1000 * pct([r[1] for r in ok], 99), pct([r[2] for r in ok], 99),
                               sum(r[3] for r in ok) / elapsed, steps["tp"], steps["sp"],
                               switches))
                if failed:
                    notes.append("%s: %d requests failed (%s)" % (policy, len(failed),
                                                                  sorted(set(failed))))
                if policy == "cost":
                    h = histogram(text, "shift_cost_prediction_relative_error")
                    total = h.get("+Inf", 0)
                    predicted = metric(text, "shift_cost_predicted_step_seconds_total") or 0
                    measured = metric(text, "shift_cost_measured_step_seconds_total") or 0
                    if total:
                        notes.append(
                            "cost policy: %d steps predicted; |error| <= 10%%: %.0f%%, <= 20%%: "
                            "%.0f%%, <= 30%%: %.0f%%; total predicted %.2f s vs measured %.2f s" %
                            (total, 100 * h["0.1"] / total, 100 * h["0.2"] / total,
                             100 * h["0.3"] / total, predicted, measured))
            finally:
                cluster.stop()
        for n in notes:
            print(n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
