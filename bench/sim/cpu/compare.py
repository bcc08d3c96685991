#!/usr/bin/python3
"""Prints a simulated run (shift-sim --compare --json_out) beside one or more
real runs of the same workload (shift-bench --compare's compare.json),
configuration by configuration: each real run, the simulation, its error
against the real runs' mean, and how far the real runs spread themselves
((max - min) / mean).

    compare.py SIM.json REAL.json [REAL.json ...]
"""
import json
import sys

METRICS = (("TTFT mean", ("ttft_seconds", "mean"), 1000, "%.1f"),
           ("TTFT p90", ("ttft_seconds", "p90"), 1000, "%.1f"),
           ("TPOT mean", ("tpot_seconds", "mean"), 1000, "%.2f"),
           ("E2E mean", ("e2e_seconds", "mean"), 1000, "%.0f"),
           ("throughput", ("total_token_throughput",), 1, "%.0f"))


def value(report, key, scale):
    for k in key:
        report = report[k]
    return report * scale


def main(sim_path, *real_paths):
    with open(sim_path) as f:
        sim = json.load(f)
    reals = []
    for path in real_paths:
        with open(path) as f:
            j = json.load(f)
        reals.append(j.get("configs", j))
    runs = " | ".join("real %d" % (i + 1) for i in range(len(reals)))
    print("| config | metric (ms, tok/s) | %s | real mean | simulated | error | real spread |" % runs)
    print("|---|---|%s---|---|---|---|" % ("---|" * len(reals)))
    within, cells = 0, 0
    for config, s in sim.items():
        if not isinstance(s, dict) or "ttft_seconds" not in s:
            continue
        if not all(config in r for r in reals):
            continue
        for name, key, scale, fmt in METRICS:
            rv = [value(r[config], key, scale) for r in reals]
            sv = value(s, key, scale)
            mean = sum(rv) / len(rv)
            error = 100 * (sv - mean) / mean if mean else float("nan")
            spread = 100 * (max(rv) - min(rv)) / mean if mean else float("nan")
            cells += 1
            within += abs(error) <= 20
            print("| %s | %s | %s | %s | %s | %+.1f%% | %.0f%% |" % (
                config, name, " | ".join(fmt % v for v in rv), fmt % mean, fmt % sv, error,
                spread))
    print("\n%d of %d cells within 20%% of the real runs' mean" % (within, cells))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
