#!/usr/bin/python3
"""Overload: offers ten times the measured capacity for a bounded time and
reports what the router does with it. Excess requests should get
RESOURCE_EXHAUSTED at once, admitted ones a bounded latency, and the
router's memory should stay flat. A benchmark, not a test (loopback only,
stops by itself).

    tests/bench/overload_bench.py [--seconds=20] [--factor=10]
"""

import argparse
import concurrent.futures
import os
import random
import shutil
import sys
import tempfile
import threading
import time

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from cluster import Cluster, make_model, rss_mib  # noqa: E402


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))] if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of the overload")
    parser.add_argument("--factor", type=float, default=10, help="offered load / capacity")
    parser.add_argument("--max_tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("SHIFT_BINARY_DIR", os.path.join(ROOT, "build"))
    tmp = tempfile.mkdtemp(prefix="shift-overload-")
    cluster = None
    try:
        model = make_model(os.path.join(tmp, "model"))
        cluster = Cluster(tmp, "overload", model, world_size=1,
                          router_flags=["--max_queued_requests=64", "--max_num_seqs=32"],
                          worker_flags=["--threads=2"])
        client = cluster.client
        prompt = "The lighthouse keeper counted the ships that passed in the night"

        def one():
            t0 = time.time()
            try:
                client.generate(timeout=120, text=prompt, max_tokens=args.max_tokens,
                                ignore_eos=True)
                return "OK", time.time() - t0
            except grpc.RpcError as e:
                return e.code().name, time.time() - t0

        # Capacity: requests per second with 32 in flight, closed loop.
        done = 0
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(one) for _ in range(96)]
            done = sum(1 for f in futures if f.result()[0] == "OK")
        capacity = done / (time.time() - t0)
        rate = capacity * args.factor

        # Overload: Poisson arrivals at `rate` for `seconds`.
        rss = [rss_mib(cluster.router.pid)]
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                rss.append(rss_mib(cluster.router.pid))
        sampler = threading.Thread(target=sample)
        sampler.start()
        rng = random.Random(1)
        results = []
        with concurrent.futures.ThreadPoolExecutor(512) as pool:
            futures = []
            t = time.time()
            end = t + args.seconds
            while t < end:
                futures.append(pool.submit(one))
                t += rng.expovariate(rate)
                time.sleep(max(0.0, t - time.time()))
            results = [f.result() for f in futures]
        stop.set()
        sampler.join()
        rss.append(rss_mib(cluster.router.pid))

        ok = [s for code, s in results if code == "OK"]
        codes = {}
        for code, _ in results:
            codes[code] = codes.get(code, 0) + 1
        refused = [s for code, s in results if code == "RESOURCE_EXHAUSTED"]
        print("capacity %.1f requests/s (%d tokens each); offered %.1f/s for %.0f s" %
              (capacity, args.max_tokens, rate, args.seconds))
        print("| offered | completed | RESOURCE_EXHAUSTED | other | admitted p50 | admitted p99 | "
              "refusal p99 | router RSS start / peak / end |")
        print("|---|---|---|---|---|---|---|---|")
        other = len(results) - len(ok) - len(refused)
        print("| %d | %d | %d | %d | %.2f s | %.2f s | %.1f ms | %.0f / %.0f / %.0f MiB |" % (
            len(results), len(ok), len(refused), other, percentile(ok, 50), percentile(ok, 99),
            1000 * percentile(refused, 99), rss[0], max(rss), rss[-1]))
        print("codes:", codes)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
