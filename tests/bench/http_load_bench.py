#!/usr/bin/python3
"""HTTP load: thousands of concurrent streaming requests held by the router's
OpenAI-compatible API, and what a streamed token costs the router over HTTP
against gRPC. A benchmark, not a test (loopback only, stops by itself).

Part 1 opens --streams streaming /v1/completions requests (token-id prompts,
--max_tokens each, ignore_eos), ramped over --ramp_s seconds, holds them
all, and reads every one to its [DONE]; it samples the router's threads,
resident memory and descriptors, and counts requests that did not end with
all their tokens (lost). Part 2 runs the same closed workload (--cost_streams
streams of --cost_tokens tokens) through HTTP and through gRPC and divides
the router's CPU seconds (user + system, from /proc) by the tokens streamed.

    tests/bench/http_load_bench.py [--streams=2000] [--json_out=FILE]
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from cluster import Cluster, make_model  # noqa: E402


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """The router's peak threads, resident memory and descriptors."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, {"VmRSS": 0, "Threads": 0, "fds": 0}, False
        self.first = proc_status(pid)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            s = proc_status(self.pid)
            for k in self.peak:
                self.peak[k] = max(self.peak[k], s[k])
            time.sleep(0.1)

    def end(self):
        self.stop = True
        self.thread.join()
        return self.peak


async def stream_one(port, body, result, opened):
    """One streaming request on its own connection; appends (ok, tokens)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        result.append((False, 0, "connect: %s" % e))
        return
    payload = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    await writer.drain()
    opened.append(1)
    status = await reader.readline()
    if b" 200 " not in status:
        rest = await reader.read(4096)
        result.append((False, 0, (status + rest).decode(errors="replace")[:200]))
        writer.close()
        opened.pop()
        return
    tokens, done, buffer = 0, False, b""
    while not done:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            line = event[event.find(b"data: "):]
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: {"):
                obj = json.loads(line[6:])
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
    writer.close()
    opened.pop()
    result.append((done and tokens == body["max_tokens"], tokens, "" if done else "no [DONE]"))


async def hold(port, streams, max_tokens, ramp_s, vocab, stats=None):
    """Every stream's (ok, tokens, error); `stats` gets the most streams open
    at once and when the last was sent."""
    result, opened, tasks = [], [], []
    start = time.time()

    async def watch():
        while len(result) < streams:
            if stats is not None:
                stats["most_open"] = max(stats.get("most_open", 0), len(opened))
            await asyncio.sleep(0.05)
    watcher = asyncio.ensure_future(watch())
    for i in range(streams):
        body = {"prompt": [(7 * i + k) % vocab for k in range(16)], "max_tokens": max_tokens,
                "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        tasks.append(asyncio.ensure_future(stream_one(port, body, result, opened)))
        if i % 100 == 99:  # in batches: one sleep a request is too slow a ramp
            await asyncio.sleep(ramp_s * 100 / streams)
    if stats is not None:
        stats["all_sent_s"] = round(time.time() - start, 2)
    await asyncio.gather(*tasks)
    await watcher
    return result


def http_cost(port, streams, tokens, vocab):
    return asyncio.run(hold(port, streams, tokens, 0.2, vocab))


def grpc_cost(client, streams, tokens, vocab):
    def one(i):
        ids, _, final, _ = client.generate(token_ids=[(7 * i + k) % vocab for k in range(16)],
                                           max_tokens=tokens, ignore_eos=True, temperature=0)
        return len(ids) == tokens
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        return list(pool.map(one, range(streams)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--max_tokens", type=int, default=256)
    parser.add_argument("--ramp_s", type=float, default=2)
    parser.add_argument("--cost_streams", type=int, default=128)
    parser.add_argument("--cost_tokens", type=int, default=64)
    parser.add_argument("--json_out", default="")
    args = parser.parse_args()
    os.environ.setdefault("SHIFT_BINARY_DIR", os.path.join(ROOT, "build"))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="shift-http-load-")
    flags = ["--http_port=0", "--max_queued_requests=%d" % (args.streams + 64),
             "--max_num_seqs=256", "--http_threads=2"]
    report = {"streams": args.streams, "max_tokens": args.max_tokens, "router_flags": flags,
              "cpus": os.cpu_count()}
    cluster = None
    try:
        model = make_model(os.path.join(tmp, "model"))
        cluster = Cluster(tmp, "load", model, world_size=1, router_flags=flags,
                          worker_flags=["--kv_cache_bytes=%d" % (1 << 30)])
        vocab = cluster.client.model_info()["vocab_size"]
        pid = cluster.router.pid
        sampler = Sampler(pid)
        idle = sampler.first
        start = time.time()
        stats = {}
        results = asyncio.run(hold(cluster.http_port, args.streams, args.max_tokens, args.ramp_s,
                                   vocab, stats))
        wall = time.time() - start
        peak = sampler.end()
        lost = [r for r in results if not r[0]]
        report["hold"] = {
            "wall_s": round(wall, 2), "streams_open_at_once": stats["most_open"],
            "all_sent_after_s": stats["all_sent_s"], "completed": len(results) - len(lost), "lost": len(lost),
            "lost_examples": [r[2] for r in lost[:5]],
            "router_idle": {"threads": idle["Threads"], "rss_mib": round(idle["VmRSS"] / 1024, 1),
                            "fds": idle["fds"]},
            "router_peak": {"threads": peak["Threads"], "rss_mib": round(peak["VmRSS"] / 1024, 1),
                            "fds": peak["fds"]},
        }
        print(json.dumps(report["hold"], indent=1), flush=True)

        costs = {}
        for api in ("http", "grpc", "http", "grpc"):
            before = cpu_seconds(pid)
            t0 = time.time()
            if api == "http":
                got = http_cost(cluster.http_port, args.cost_streams, args.cost_tokens, vocab)
                ok = sum(1 for r in got if r[0])
            else:
                ok = sum(grpc_cost(cluster.client, args.cost_streams, args.cost_tokens, vocab))
            cpu = cpu_seconds(pid) - before
            tokens = ok * args.cost_tokens
            costs.setdefault(api, []).append({"router_cpu_s": round(cpu, 3), "tokens": tokens,
                                              "wall_s": round(time.time() - t0, 2),
                                              "router_cpu_us_per_token":
                                                  round(cpu / max(tokens, 1) * 1e6, 1)})
        report["cost"] = {"streams": args.cost_streams, "tokens_each": args.cost_tokens,
                          "runs": costs}
        print(json.dumps(report["cost"], indent=1), flush=True)
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
