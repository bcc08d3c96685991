#!/usr/bin/python3
"""The ranks' wait for the router between decode steps, 1, 64 and 256 sequences.

Starts shift-router and one CPU worker on a tiny generated model and, for
each concurrency C (1, 64, 256), sends C decoding requests at once. It
measures over the window in which all C run (from the moment the last is
admitted until the first ends: back-to-back decode steps of C sequences),
from /metrics: the rank's wait between sending a step's result and reading
the next plan (shift_worker_step_gap_seconds), the rank's own time per
step (its compute and collectives), the ranks' idle fraction (wait / (own
time + wait)), the router's time per step
(shift_router_step_overhead_seconds: from a step's last result to the next
plan sent) and the wall time per step; and, over whole requests, the mean
time per output token the clients saw. On 2 shared cores the clients and
the router's other threads take CPU from the worker, which the wall time
and the clients' time show.

The router plans each step ahead unless given
--router_flag=--async_scheduling=false; --compare runs the router without
and with planning ahead alternately, --runs times each, and prints medians
with the spread (min-max). A benchmark, not a test.

    tests/bench/router_overhead_bench.py [--build=build] [--compare --runs=3]
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "python"))
import shift_client  # noqa: E402

ROUTER_SERIES = ("shift_router_step_overhead_seconds_sum",
                 "shift_router_step_overhead_seconds_count")
WORKER_SERIES = ("shift_worker_step_gap_seconds_sum", "shift_worker_step_gap_seconds_count",
                 "shift_worker_steps_total", "shift_worker_step_compute_seconds_total",
                 "shift_worker_step_communication_seconds_total")
COLUMNS = [("steps", "steps in the window", "%d"),
           ("rank_step_ms", "rank's own time per step", "%.2f ms"),
           ("wait_us", "rank's wait between steps", "%.1f us"),
           ("idle_pct", "ranks idle", "%.1f %%"),
           ("router_us", "router time per step", "%.1f us"),
           ("wall_ms", "wall time per step", "%.2f ms"),
           ("tpot_ms", "client time per output token", "%.2f ms")]


def scrape(address, names):
    """Each series summed over its labels."""
    text = urllib.request.urlopen("http://%s/metrics" % address, timeout=10).read().decode()
    return {name: sum(float(v) for v in re.findall(
        "^%s(?:\\{[^}]*\\})? (\\S+)$" % name, text, re.M)) for name in names}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(build, flags, concurrencies, tokens):
    """One router and worker; a dict of COLUMNS per concurrency."""
    tmp = tempfile.mkdtemp(prefix="shift-overhead-")
    model = os.path.join(tmp, "model")
    subprocess.run([os.path.join(build, "tools", "shift-mkmodel"), "--preset=tiny",
                    "--out=" + model], check=True, capture_output=True)
    ports = os.path.join(tmp, "ports")
    router = subprocess.Popen([os.path.join(build, "router", "shift-router"),
                               "--model=" + model, "--host=127.0.0.1", "--port=0",
                               "--internal_port=0", "--metrics_port=0", "--ports_file=" + ports,
                               "--max_num_seqs=256", "--max_queued_requests=1024"] + flags,
                              stderr=subprocess.DEVNULL)
    procs = [router]
    results = []
    try:
        while not (os.path.exists(ports) and open(ports).read().endswith("\n")):
            time.sleep(0.05)
        fields = dict(kv.split("=") for kv in open(ports).read().split())
        address, metrics = "127.0.0.1:" + fields["grpc"], "127.0.0.1:" + fields["metrics"]
        internal = "127.0.0.1:" + fields["internal"]
        worker_metrics = "127.0.0.1:%d" % free_port()
        procs.append(subprocess.Popen([os.path.join(build, "worker", "shift-worker"),
                                       "--router=" + internal, "--model=" + model,
                                       "--metrics_port=" + worker_metrics.split(":")[1],
                                       "--threads=2", "--kv_cache_bytes=536870912"],
                                      stderr=subprocess.DEVNULL))
        client = shift_client.Client(address)
        while not client.status()["groups"][0]["ready"]:
            time.sleep(0.05)

        def snapshot():
            values = scrape(metrics, ROUTER_SERIES)
            values.update(scrape(worker_metrics, WORKER_SERIES))
            values["t"] = time.time()
            return values

        for concurrency in concurrencies:
            # Enough tokens that the last request is admitted before the
            # first ends.
            max_tokens = max(tokens, 2 * concurrency)
            window, done = {}, threading.Event()

            def watch():
                """Snapshots when all requests run, and when one has ended."""
                while client.status()["groups"][0]["running_sequences"] < concurrency:
                    if done.wait(0.01):
                        return
                window["from"] = snapshot()
                while client.status()["groups"][0]["running_sequences"] == concurrency:
                    time.sleep(0.01)
                window["to"] = snapshot()

            def run(i):
                first, ids = None, 0
                for raw in client.generate_stream(text="request %d says hello" % i,
                                                  max_tokens=max_tokens, ignore_eos=True):
                    msg = shift_client.decode_generate_response(raw)
                    if "delta" in msg and msg["delta"]["token_ids"]:
                        ids += len(msg["delta"]["token_ids"])
                        if first is None:
                            first = time.time()
                return (time.time() - first) / max(ids - 1, 1)

            watcher = threading.Thread(target=watch)
            watcher.start()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                tpots = list(pool.map(run, range(concurrency)))
            done.set()
            watcher.join()
            if "from" not in window:
                sys.exit("the %d requests never ran all at once (raise --tokens)" % concurrency)
            a, b = window["from"], window["to"]
            d = {k: b[k] - a[k] for k in a}
            steps = max(d["shift_worker_steps_total"], 1)
            rank_step = (d["shift_worker_step_compute_seconds_total"] +
                         d["shift_worker_step_communication_seconds_total"]) / steps
            wait = d["shift_worker_step_gap_seconds_sum"] / max(
                d["shift_worker_step_gap_seconds_count"], 1)
            results.append({
                "concurrency": concurrency, "steps": d["shift_worker_steps_total"],
                "rank_step_ms": 1e3 * rank_step, "wait_us": 1e6 * wait,
                "idle_pct": 100 * wait / (rank_step + wait) if rank_step + wait > 0 else 0,
                "router_us": 1e6 * d["shift_router_step_overhead_seconds_sum"] / max(
                    d["shift_router_step_overhead_seconds_count"], 1),
                "wall_ms": 1e3 * d["t"] / steps,
                "tpot_ms": 1e3 * sum(tpots) / len(tpots)})
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
    return results


def table(rows):
    head = ["running sequences"] + [c[1] for c in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [str(row["concurrency"])] + [fmt % row[key] for key, _, fmt in COLUMNS]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--tokens", type=int, default=256,
                        help="tokens per request (at least twice the concurrency)")
    parser.add_argument("--router_flag", action="append", default=[],
                        help="a flag for shift-router (repeatable), e.g. "
                             "--router_flag=--async_scheduling=false")
    parser.add_argument("--concurrency", default="1,64,256")
    parser.add_argument("--compare", action="store_true",
                        help="alternate runs with --async_scheduling=false and true")
    parser.add_argument("--runs", type=int, default=1, help="runs of each")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    variants = [("", args.router_flag)]
    if args.compare:
        variants = [("off", args.router_flag + ["--async_scheduling=false"]),
                    ("on", args.router_flag + ["--async_scheduling"])]
    runs = {name: [] for name, _ in variants}
    for i in range(args.runs):
        for name, flags in variants:
            rows = bench(args.build, flags, concurrencies, args.tokens)
            runs[name].append(rows)
            print("run %d, --async_scheduling %s:" % (i + 1, name) if args.compare
                  else "run %d:" % (i + 1))
            table(rows)
            print(flush=True)
    if args.runs == 1 and not args.compare:
        return
    print("medians of %d runs (spread: min-max):" % args.runs)
    summary = []
    for j, c in enumerate(concurrencies):
        for name, _ in variants:
            row = {"concurrency": c, "variant": name}
            for key, _, fmt in COLUMNS:
                values = [rows[j][key] for rows in runs[name]]
                row[key] = statistics.median(values)
                row[key + "_spread"] = (min(values), max(values))
            summary.append(row)
    head = ["running sequences", "async"] + [c[1] for c in COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in summary:
        cells = [str(row["concurrency"]), row["variant"]]
        for key, _, fmt in COLUMNS:
            lo, hi = row[key + "_spread"]
            unit = fmt.split(" ", 1)[1] if " " in fmt else ""
            number = fmt.split(" ", 1)[0]
            cells.append(("%s (%s-%s) %s" % (number, number, number, unit)).strip() %
                         (row[key], lo, hi))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
