#!/usr/bin/python3
"""Prefix-cache hit rate under a slice of the public Mooncake conversation
trace (../shared/data/traces), replayed against a live router on a tiny
generated model. A benchmark, not a test.

The trace names each prompt's 512-token blocks by hash id (equal ids are a
shared prefix). Scaled to this CPU: every block becomes `--block_tokens`
tokens (a pure function of its id, so equal ids give equal tokens), input
lengths shrink by the same factor, outputs are capped, and the slice's
timestamps are compressed to `--seconds`. Reports the hit rate the router
measured (cached prompt tokens / prompt tokens) next to the trace's own
bound with an unlimited cache (blocks whose hash prefix appeared before).

    tests/bench/trace_prefix_bench.py [--requests=300] [--seconds=30]
"""

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from cluster import Cluster, make_model, metric  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default=os.path.join(
        ROOT, "..", "shared", "data", "traces", "mooncake_conversation_trace.jsonl"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30, help="replay the slice in this long")
    parser.add_argument("--block_tokens", type=int, default=8, help="tokens per trace block")
    parser.add_argument("--max_output", type=int, default=16)
    parser.add_argument("--kv_blocks", type=int, default=4096, help="KV blocks of 16 tokens")
    args = parser.parse_args()
    os.environ.setdefault("SHIFT_BINARY_DIR", os.path.join(ROOT, "build"))

    with open(args.trace) as f:
        rows = [json.loads(line) for _, line in zip(range(args.requests), f)]
    scale = 512 // args.block_tokens
    requests, seen, ideal_hits, total = [], set(), 0, 0
    for row in rows:
        length = max(1, min(row["input_length"] // scale, 2000 - args.max_output))
        prompt, chain = [], ()
        for h in row["hash_ids"]:
            chain = chain + (h,)
            block = [random.Random(h * 7919 + 1).randint(10, 1000) for _ in range(args.block_tokens)]
            full = len(prompt) + args.block_tokens <= length
            if full and chain in seen:
                ideal_hits += args.block_tokens
            if full:
                seen.add(chain)
            prompt += block
        prompt = prompt[:length]
        total += len(prompt)
        out = max(1, min(row["output_length"], args.max_output))
        requests.append((row["timestamp"], prompt, out))
    span = max(1, requests[-1][0] - requests[0][0])

    tmp = tempfile.mkdtemp(prefix="shift-trace-")
    cluster = None
    try:
        model = make_model(os.path.join(tmp, "model"))
        # The tiny model's KV block (2 layers, 2 kv heads x 16, fp32) is 8 KiB.
        cluster = Cluster(tmp, "trace", model, world_size=1,
                          router_flags=["--max_model_len=2048", "--max_queued_requests=100000"],
                          worker_flags=["--kv_cache_bytes=%d" % (args.kv_blocks * 8192),
                                        "--threads=2"])
        start = time.time()

        def send(item):
            t, prompt, out = item
            delay = start + (t - requests[0][0]) / span * args.seconds - time.time()
            if delay > 0:
                time.sleep(delay)
            _, _, final, _ = cluster.client.generate(timeout=600, token_ids=prompt,
                                                     max_tokens=out, ignore_eos=True)
            return final["usage"]

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            usages = list(pool.map(send, requests))
        elapsed = time.time() - start
        cached = sum(u["cached_prompt_tokens"] for u in usages)
        prompt_tokens = sum(u["prompt_tokens"] for u in usages)
        text = cluster.metrics()
        print("Mooncake conversation trace, first %d requests, replayed in %.1f s "
              "(%d tokens per trace block, KV %d blocks)" % (len(requests), elapsed,
                                                             args.block_tokens, args.kv_blocks))
        print("| prompt tokens | served from the prefix cache | hit rate | unlimited-cache bound |")
        print("|---|---|---|---|")
        print("| %d | %d | %.1f%% | %.1f%% |" % (prompt_tokens, cached,
                                                 100.0 * cached / prompt_tokens,
                                                 100.0 * ideal_hits / total))
        print("router counter shift_prefix_cache_hit_tokens_total = %d" %
              metric(text, "shift_prefix_cache_hit_tokens_total"))
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
