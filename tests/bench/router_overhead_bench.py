#!/usr/bin/python3
"""Router-side time per step with 1, 64 and 256 running sequences.

Starts shift-router and one CPU worker on a tiny generated model, runs C
concurrent decoding requests (C = 1, 64, 256) and reads the router's own
time per step (shift_router_step_overhead_seconds: from a step's last
result to the next step's plan sent, the worker's time excluded) and the
step count from /metrics. Beside it, the wall time per step and the mean
time per output token the clients saw, which also count what the router's
other threads (output streaming, gRPC) take from the worker on a small
machine, and the rank's own wait between sending a result and reading
the next plan (shift_worker_step_gap_seconds). With
--router_flag=--async_scheduling the router plans each step ahead. A
benchmark, not a test.

    tests/bench/router_overhead_bench.py [--build=build]
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "python"))
import shift_client  # noqa: E402


def scrape(address, names=("shift_router_step_overhead_seconds_sum",
                            "shift_router_step_overhead_seconds_count")):
    text = urllib.request.urlopen("http://%s/metrics" % address, timeout=10).read().decode()
    values = {}
    for name in names:
        values[name] = sum(float(v) for v in re.findall(
            "^%s(?:\\{[^}]*\\})? (\\S+)$" % name, text, re.M))
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--router_flag", action="append", default=[],
                        help="a flag for shift-router (repeatable), e.g. --router_flag=--async_scheduling")
    parser.add_argument("--concurrency", default="1,64,256")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="shift-overhead-")
    model = os.path.join(tmp, "model")
    subprocess.run([os.path.join(args.build, "tools", "shift-mkmodel"), "--preset=tiny",
                    "--out=" + model], check=True, capture_output=True)
    ports = os.path.join(tmp, "ports")
    router = subprocess.Popen([os.path.join(args.build, "router", "shift-router"),
                               "--model=" + model, "--host=127.0.0.1", "--port=0", "--internal_port=0",
                               "--metrics_port=0", "--ports_file=" + ports,
                               "--max_num_seqs=256", "--max_queued_requests=1024"] +
                              args.router_flag,
                              stderr=subprocess.DEVNULL)
    procs = [router]
    try:
        while not (os.path.exists(ports) and open(ports).read().endswith("\n")):
            time.sleep(0.05)
        fields = dict(kv.split("=") for kv in open(ports).read().split())
        address, metrics = "127.0.0.1:" + fields["grpc"], "127.0.0.1:" + fields["metrics"]
        internal = "127.0.0.1:" + fields["internal"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            worker_metrics = "127.0.0.1:%d" % s.getsockname()[1]
        procs.append(subprocess.Popen([os.path.join(args.build, "worker", "shift-worker"),
                                       "--router=" + internal, "--model=" + model,
                                       "--metrics_port=" + worker_metrics.split(":")[1],
                                       "--threads=2", "--kv_cache_bytes=536870912"],
                                      stderr=subprocess.DEVNULL))
        client = shift_client.Client(address)
        while not client.status()["groups"][0]["ready"]:
            time.sleep(0.05)
        gap = ("shift_worker_step_gap_seconds_sum", "shift_worker_step_gap_seconds_count")
        print("| running sequences | steps | router time per step (mean) | wall time per step | "
              "rank's wait between steps (mean) | client time per output token (mean) |")
        print("|---|---|---|---|---|---|")
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            before = scrape(metrics)
            gap_before = scrape(worker_metrics, gap)
            started = time.time()

            def run(i):
                first, ids = None, 0
                for raw in client.generate_stream(text="request %d says hello" % i,
                                                  max_tokens=args.tokens, ignore_eos=True):
                    msg = shift_client.decode_generate_response(raw)
                    if "delta" in msg and msg["delta"]["token_ids"]:
                        ids += len(msg["delta"]["token_ids"])
                        if first is None:
                            first = time.time()
                return (time.time() - first) / max(ids - 1, 1)

            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                tpots = list(pool.map(run, range(concurrency)))
            wall = time.time() - started
            after = scrape(metrics)
            steps = after["shift_router_step_overhead_seconds_count"] - \
                before["shift_router_step_overhead_seconds_count"]
            seconds = after["shift_router_step_overhead_seconds_sum"] - \
                before["shift_router_step_overhead_seconds_sum"]
            gap_after = scrape(worker_metrics, gap)
            gaps = gap_after[gap[1]] - gap_before[gap[1]]
            gap_s = gap_after[gap[0]] - gap_before[gap[0]]
            print("| %d | %d | %.1f us | %.2f ms | %.1f us | %.2f ms |" % (
                concurrency, steps, 1e6 * seconds / steps, 1e3 * wall / steps,
                1e6 * gap_s / max(gaps, 1), 1e3 * sum(tpots) / len(tpots)))
    finally:
        router.send_signal(signal.SIGTERM)  # the ranks stay for the next router
        for p in procs:
            if p is not router:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
