#!/usr/bin/python3
"""The Shift Parallelism paper's Llama-70B FP8 experiment on 8xH200, simulated.

The paper (arXiv 2509.16495, Fig. 12c) serves Llama-3.3-70B FP8 with 4k-token
prompts and 250 output tokens on one 8xH200 node and reports, per
configuration, TTFT and TPOT "in low traffic" (one request at a time) and
combined throughput (prompt + output tokens per second) "in high traffic" (a
batch of thousands of requests with enough concurrency to saturate). This
script simulates the same with shift-sim: DP (8 groups of one GPU), TP
(P = 8, weights sharded), SP (P = 8, Ulysses) and shift (the threshold
policy; SP above the threshold, TP at or below). At most three named profile
numbers are fitted, to the TP cells only; every other cell is a prediction.
Writes bench/sim/paper.json, and the profile with the fitted numbers in it,
bench/sim/hardware/h200-8x-fitted.json (what the README's shift-sim example
and bench/sim/run-policies use).

    bench/sim/paper.py [--build=build] [--requests=2000] [--no-fit]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "bench/sim/models/llama-3.3-70b-fp8/config.json"
HARDWARE = "bench/sim/hardware/h200-8x.json"
# The paper's Fig. 12c, 8xH200, Llama-70B FP8, 4k in / 250 out.
PAPER = {
    "dp": {"ttft_ms": 614, "tpot_ms": 22.5, "throughput": 45.9e3},
    "tp": {"ttft_ms": 159, "tpot_ms": 9.34, "throughput": 24.7e3},
    "sp": {"ttft_ms": 103, "tpot_ms": 32.5, "throughput": 37.2e3},
    "shift": {"ttft_ms": 102, "tpot_ms": 10.1, "throughput": 37.4e3},
}
# The serving settings, as the paper's artifact runs them where it says
# (benchmark/reproducibility/server.sh: --max-num-batched-tokens 131072,
# --no-enable-prefix-caching; shift_parallel_threshold's default 512), and
# as stated in paper.md where it does not.
SETTINGS = ["--max_num_batched_tokens=131072", "--max_num_seqs=1024", "--shift_threshold=512",
            "--enable_prefix_caching=false", "--max_queued_requests=1000000",
            "--input_tokens=4000", "--output_tokens=250", "--duration_s=1e9"]
CONFIGS = {"dp": ["--compare=dp"], "tp": ["--policy=tp"], "sp": ["--policy=sp"],
           "shift": ["--policy=threshold"]}
# The numbers fitted to the TP cells, with their starting values and bounds.
FITTED = {
    "step_overhead_s": (2e-3, 1e-4, 2e-2),
    "all_reduce.bus_bandwidth": (480e9, 50e9, 900e9),
    "gemm_efficiency.fp8": (0.734, 0.2, 1.0),
}


def simulate(build, config, load, requests, fit):
    cmd = [os.path.join(build, "tools", "shift-sim"), "--model=" + MODEL,
           "--hardware=" + HARDWARE] + SETTINGS + CONFIGS[config]
    if load == "low":
        cmd += ["--workload=closed", "--concurrency=1", "--requests=6"]
    else:
        cmd += ["--workload=closed", "--concurrency=%d" % requests, "--requests=%d" % requests]
    if fit:
        cmd.append("--set=" + ",".join("%s=%.9g" % kv for kv in fit.items()))
    out = os.path.join("/tmp" if not os.access(ROOT, os.W_OK) else ROOT, "build", "paper-sim.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(cmd + ["--json_out=" + out], cwd=ROOT, check=True, capture_output=True,
                   text=True)
    with open(out) as f:
        j = json.load(f)
    if "dp" in j:
        j = j["dp"]
    return {"ttft_ms": 1000 * j["ttft_seconds"]["mean"], "tpot_ms": 1000 * j["tpot_seconds"]["mean"],
            "throughput": j["total_token_throughput"],
            "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
                                for c in cmd[:1]) + " " + " ".join(cmd[1:])}


def cells(build, config, requests, fit):
    low = simulate(build, config, "low", requests, fit)
    high = simulate(build, config, "high", requests, fit)
    return {"ttft_ms": low["ttft_ms"], "tpot_ms": low["tpot_ms"], "throughput": high["throughput"],
            "commands": [low["command"], high["command"]]}


def fit_tp(build, requests):
    """Nelder-Mead over the fitted numbers (log space) on TP's three cells."""
    names = list(FITTED)
    lo = [math.log(FITTED[n][1]) for n in names]
    hi = [math.log(FITTED[n][2]) for n in names]

    def values(x):
        return {n: math.exp(min(max(v, a), b)) for n, v, a, b in zip(names, x, lo, hi)}

    def loss(x):
        got = cells(build, "tp", requests, values(x))
        return sum(math.log(got[k] / PAPER["tp"][k]) ** 2 for k in ("ttft_ms", "tpot_ms",
                                                                    "throughput"))

    x0 = [math.log(FITTED[n][0]) for n in names]
    simplex = [x0] + [[v + (0.5 if i == j else 0) for j, v in enumerate(x0)]
                      for i in range(len(x0))]
    scored = sorted((loss(x), x) for x in simplex)
    for _ in range(60):
        scored.sort()
        best, worst = scored[0], scored[-1]
        centroid = [sum(x[i] for _, x in scored[:-1]) / (len(scored) - 1) for i in range(len(x0))]
        reflect = [c + (c - w) for c, w in zip(centroid, worst[1])]
        fr = loss(reflect)
        if fr < best[0]:
            expand = [c + 2 * (c - w) for c, w in zip(centroid, worst[1])]
            fe = loss(expand)
            scored[-1] = (fe, expand) if fe < fr else (fr, reflect)
        elif fr < scored[-2][0]:
            scored[-1] = (fr, reflect)
        else:
            contract = [c + 0.5 * (w - c) for c, w in zip(centroid, worst[1])]
            fc = loss(contract)
            if fc < worst[0]:
                scored[-1] = (fc, contract)
            else:
                scored = [best] + [(loss(y), y) for y in
                                   ([b + 0.5 * (v - b) for b, v in zip(best[1], x)]
                                    for _, x in scored[1:])]
        if scored[0][0] < 1e-6:
            break
    scored.sort()
    return values(scored[0][1]), scored[0][0]


def write_fitted_profile(fit):
    """The sourced profile with the fitted numbers in it, rounded as --set
    is given them, so it simulates what the fitted commands in paper.json do."""
    with open(os.path.join(ROOT, HARDWARE)) as f:
        profile = json.load(f)
    profile["name"] += ", three numbers fitted to the paper's TP cells"
    for path, value in fit.items():
        node = profile
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        sourced = node[keys[-1]]
        node[keys[-1]] = float("%.9g" % value)
        profile["sources"][path] = (
            "fitted by bench/sim/paper.py to the paper's TP cells (Fig. 12c, 8xH200, "
            "Llama-70B FP8); the sourced value, %s in %s: %s" % (
                sourced, os.path.basename(HARDWARE), profile["sources"][path]))
    with open(os.path.join(ROOT, "bench", "sim", "hardware", "h200-8x-fitted.json"), "w") as f:
        json.dump(profile, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--requests", type=int, default=2000,
                        help="requests of the high-traffic batch")
    parser.add_argument("--no-fit", action="store_true", help="use the profile as it is")
    args = parser.parse_args()
    start = time.time()
    fit, loss = ({}, None) if args.no_fit else fit_tp(args.build, args.requests)
    results = {c: cells(args.build, c, args.requests, fit) for c in ("tp", "sp", "shift", "dp")}
    nominal = {c: cells(args.build, c, args.requests, {}) for c in ("tp", "sp", "shift", "dp")}
    report = {"fitted": fit, "fit_loss": loss, "simulated": results, "unfitted": nominal,
              "paper": PAPER, "seconds": time.time() - start}
    with open(os.path.join(ROOT, "bench", "sim", "paper.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    if fit:
        write_fitted_profile(fit)
    rows = []
    for c in ("tp", "sp", "shift", "dp"):
        for k, name, unit in (("ttft_ms", "TTFT", "ms"), ("tpot_ms", "TPOT", "ms"),
                              ("throughput", "throughput", "tokens/s")):
            p, s, u = PAPER[c][k], results[c][k], nominal[c][k]
            rows.append((c, name, unit, p, s, 100 * (s - p) / p, u, 100 * (u - p) / p,
                         "fitted" if c == "tp" and fit else "predicted"))
    print("| config | metric | paper | simulated | error | unfitted profile | error | cell |")
    print("|---|---|---|---|---|---|---|---|")
    for c, name, unit, p, s, e, u, ue, kind in rows:
        fmt = "%.0f" if unit == "tokens/s" else "%.3g"
        print("| %s | %s (%s) | %s | %s | %+.1f%% | %s | %+.1f%% | %s |" % (
            c, name, unit, fmt % p, fmt % s, e, fmt % u, ue, kind))
    print("fitted:", json.dumps(fit), "loss %s" % loss, "in %.0f s" % (time.time() - start),
          file=sys.stderr)


if __name__ == "__main__":
    main()
