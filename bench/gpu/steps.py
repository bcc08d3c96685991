#!/usr/bin/env python3
"""Summarises a --step_trace file of shift-generate or shift-router: the
median measured time of the steps that match, leaving out the first such
step (it pays for one-time set-up: GEMM algorithm choice, allocations).

    steps.py TRACE decode B     steps of B decodes and nothing else
    steps.py TRACE prefill N    steps of one N-token chunk and no decode
    steps.py TRACE mixed D      steps of D decodes beside a prefill chunk

Prints 'steps=K median_ms=... min_ms=... max_ms=... overhead_ms=...' where
overhead is the median time from the previous step's end to this one's
start as the loop saw it (absent from the trace: the wall clock between
lines, less the step, when the steps ran back to back).
"""

import json
import sys


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("decode", "prefill", "mixed"):
        print(__doc__, file=sys.stderr)
        return 2
    path, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if kind == "decode":
        match = [x for x in lines if x["decodes"] == n and x["tokens"] == n]
    elif kind == "mixed":
        match = [x for x in lines if x["decodes"] == n and x["tokens"] > n]
    else:
        match = [x for x in lines if x["decodes"] == 0 and x["tokens"] == n]
    gaps = []
    for prev, cur in zip(lines, lines[1:]):
        if cur in match:
            gaps.append(cur["t"] - prev["t"] - cur["measured_s"])
    match = match[1:]
    if not match:
        print("steps=0")
        return 1
    times = sorted(x["measured_s"] * 1e3 for x in match)
    gaps = sorted(g * 1e3 for g in gaps[1:]) or [float("nan")]
    tokens = sorted(x["tokens"] for x in match)
    print("steps=%d tokens=%d median_ms=%.3f min_ms=%.3f max_ms=%.3f overhead_ms=%.3f" %
          (len(times), tokens[len(tokens) // 2], times[len(times) // 2], times[0], times[-1],
           gaps[len(gaps) // 2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
