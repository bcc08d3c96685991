#!/usr/bin/python3
"""Prints a real run (shift-bench --compare's compare.json) beside a simulated
one (shift-sim --compare --json_out), configuration by configuration, with
the simulation's error on TTFT, TPOT and throughput."""
import json
import sys


def main(real_path, sim_path):
    with open(real_path) as f:
        real = json.load(f)
    with open(sim_path) as f:
        sim = json.load(f)
    real = real.get("configs", real)
    print("| config | metric | real | simulated | error |")
    print("|---|---|---|---|---|")
    for config, s in sim.items():
        if not isinstance(s, dict) or config not in real or "ttft_seconds" not in s:
            continue
        r = real[config]
        for name, key, scale, fmt in (("TTFT mean", ("ttft_seconds", "mean"), 1000, "%.1f ms"),
                                      ("TTFT p90", ("ttft_seconds", "p90"), 1000, "%.1f ms"),
                                      ("TPOT mean", ("tpot_seconds", "mean"), 1000, "%.2f ms"),
                                      ("E2E mean", ("e2e_seconds", "mean"), 1000, "%.0f ms"),
                                      ("throughput", ("total_token_throughput",), 1, "%.0f tok/s")):
            rv, sv = r, s
            for k in key:
                rv, sv = rv[k], sv[k]
            rv, sv = rv * scale, sv * scale
            error = 100 * (sv - rv) / rv if rv else float("nan")
            print("| %s | %s | %s | %s | %+.1f%% |" % (config, name, fmt % rv, fmt % sv, error))


if __name__ == "__main__":
    main(*sys.argv[1:3])
