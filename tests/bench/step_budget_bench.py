#!/usr/bin/python3
"""Steps sized to a latency target against fixed step caps, on a real cluster.

Starts shift-router with one group of two CPU ranks (a generated Llama of
about 5M parameters, bench/cpu-recipe's) and replays a public trace whose
long prompts come in bursts on top of running decodes (by default the
Mooncake conversation trace, lengths / 8; the cost model's calibration in
tools/sim-calibrate uses the Azure conversation trace). Each run starts a
fresh cluster, so every configuration learns its cost model from nothing.

1. A sweep of fixed caps (--max_num_batched_tokens), one run each. The best
   cap is the one with the lowest mean end-to-end latency (it weighs each
   request's wait for its first token and its decode time by how long they
   last).
2. The target: the best cap's TPOT p50, rounded to 0.1 ms.
3. --runs rounds, each running in turn (a) the fixed default cap (2048),
   (b) the best cap, (c) the default cap with --tpot_slo_ms at the target;
   every run counts the inter-token gaps within the target
   (shift-bench --tpot_limit_ms).

Writes, in --out: README.md (the tables: medians of the rounds with the
spread, min-max), runs.md (every run), results.json, the router's step
traces' budget reasons for (c), and plots (gnuplot): sweep.png (latency by
cap) and compare.png (the three configurations, medians with min-max
bars). A benchmark, not a test: it takes about --runs x 3 + sweep runs of
roughly a minute each.

    tests/bench/step_budget_bench.py [--build=build] [--out=DIR] [--runs=3]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
DATA = os.path.join(ROOT, "..", "shared", "data", "traces")

# bench/cpu-recipe's model: compute, not scheduling, sets the pace.
MODEL_FLAGS = ["--preset=tiny", "--hidden_size=256", "--num_layers=4", "--num_heads=8",
               "--num_kv_heads=4", "--head_dim=32", "--intermediate_size=768",
               "--vocab_size=4096", "--dtype=fp32"]
DEFAULT_CAP = 2048

# (key, heading, format) of the tables.
COLUMNS = [("tpot_p50", "TPOT p50", "%.1f ms"),
           ("tpot_p99", "TPOT p99", "%.1f ms"),
           ("itl_p99", "ITL p99", "%.1f ms"),
           ("within", "gaps within target", "%.1f %%"),
           ("requests_within", "requests with TPOT within target", "%.1f %%"),
           ("ttft_p50", "TTFT p50", "%.0f ms"),
           ("ttft_p99", "TTFT p99", "%.0f ms"),
           ("e2e_mean", "E2E mean", "%.0f ms"),
           ("throughput", "tokens/s (prompt + generated)", "%.0f")]


def summary(report):
    ms = 1e3
    return {"tpot_p50": ms * report["tpot_seconds"]["p50"],
            "tpot_p99": ms * report["tpot_seconds"]["p99"],
            "itl_p99": ms * report["itl_seconds"]["p99"],
            "within": 100 * report["itl_within_tpot_limit"]
            if report["itl_within_tpot_limit"] >= 0 else float("nan"),
            # Goodput counts requests with TPOT within --tpot_limit_ms.
            "requests_within": 100 * report["goodput"] * report["duration_seconds"] /
            max(report["completed"], 1) if report["tpot_limit_seconds"] > 0 else float("nan"),
            "ttft_p50": ms * report["ttft_seconds"]["p50"],
            "ttft_p99": ms * report["ttft_seconds"]["p99"],
            "e2e_mean": ms * report["e2e_seconds"]["mean"],
            "throughput": report["total_token_throughput"],
            "completed": report["completed"], "requests": report["requests"]}


def budget_reasons(trace, target_ms=0):
    """From a router's step trace: steps by budget reason, and with a
    target, the steps with decodes (the ones a target holds back): how
    many, the share measured within the target, and the measured over
    predicted seconds (p50, p90) of those planned with a prediction."""
    counts, decode_steps, within, ratios = {}, 0, 0, []
    with open(trace) as f:
        for text in f:
            line = json.loads(text)
            reason = line.get("budget_reason")
            if reason:
                counts[reason] = counts.get(reason, 0) + 1
            if target_ms > 0 and reason and line["decodes"] > 0:
                decode_steps += 1
                within += line["measured_s"] * 1e3 <= target_ms
                if line.get("budget_predicted_s"):
                    ratios.append(line["measured_s"] / line["budget_predicted_s"])
    if target_ms > 0:
        ratios.sort()
        counts["steps_with_decodes"] = decode_steps
        counts["within_target_pct"] = round(100 * within / max(decode_steps, 1), 1)
        if ratios:
            counts["measured_over_predicted_p50"] = round(ratios[len(ratios) // 2], 3)
            counts["measured_over_predicted_p90"] = round(ratios[len(ratios) * 9 // 10], 3)
    return counts


def replay_flags(args, tpot_limit_ms, out):
    return ["--workload=trace", "--trace=" + args.trace, "--length_scale=%g" % args.length_scale,
            "--time_scale=%g" % args.time_scale, "--requests=%d" % args.requests,
            "--max_output_tokens=%d" % args.max_output_tokens,
            "--tpot_limit_ms=%g" % tpot_limit_ms, "--json_out=" + out, "--seed=1"]


def simulate(args, tmp, name, flags, tpot_limit_ms):
    """shift-sim on the 8xH200 profile: its report and budget reasons."""
    trace = os.path.join(tmp, name + ".steps.jsonl")
    out = os.path.join(tmp, name + ".json")
    subprocess.run([os.path.join(args.build, "tools", "shift-sim"),
                    "--model=" + os.path.join(ROOT, "bench", "sim", "models",
                                              "llama-3.3-70b-fp8", "config.json"),
                    "--hardware=" + os.path.join(ROOT, "bench", "sim", "hardware",
                                                 "h200-8x-fitted.json"),
                    "--max_num_seqs=1024", "--max_queued_requests=1000000",
                    "--step_trace=" + trace] + replay_flags(args, tpot_limit_ms, out) + flags,
                   check=True, capture_output=True, text=True, timeout=1800)
    with open(out) as f:
        report = json.load(f)
    return summary(report), budget_reasons(trace, target_of(flags))


def target_of(flags):
    for flag in flags:
        if flag.startswith("--tpot_slo_ms="):
            return float(flag.split("=")[1])
    return 0


def run(args, tmp, model, name, router_flags, tpot_limit_ms):
    """One fresh cluster, one replay; shift-bench's report and the step
    trace's budget reasons."""
    if args.sim:
        return simulate(args, tmp, name, router_flags, tpot_limit_ms)
    import cluster  # tests/python
    trace = os.path.join(tmp, name + ".steps.jsonl")
    c = cluster.Cluster(tmp, name, model, 2,
                        router_flags=["--step_trace=" + trace, "--max_queued_requests=100000"] +
                        router_flags,
                        worker_flags=["--kv_cache_bytes=%d" % (256 << 20)])
    out = os.path.join(tmp, name + ".json")
    try:
        subprocess.run([os.path.join(args.build, "tools", "shift-bench"),
                        "--address=" + c.address, "--progress=false"] +
                       replay_flags(args, tpot_limit_ms, out),
                       check=True, capture_output=True, text=True, timeout=1800)
        c.stop()
    except Exception:
        c.stop()
        raise
    with open(out) as f:
        report = json.load(f)
    return summary(report), budget_reasons(trace, target_of(router_flags))


def spread(values):
    values = [v for v in values if v is not None and v == v]  # not measured: None or NaN
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), min(values), max(values)


def table(rows, with_spread):
    out = "| config | " + " | ".join(h for _, h, _ in COLUMNS) + " |\n"
    out += "|---" * (len(COLUMNS) + 1) + "|\n"
    for name, runs in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            median, lo, hi = spread([r.get(key, float("nan")) for r in runs])
            if median != median:  # not measured
                cells.append("-")
                continue
            cell = fmt % median
            if with_spread and len(runs) > 1:
                cell += " (%s-%s)" % ((fmt % lo).split()[0], (fmt % hi).split()[0])
            cells.append(cell)
        out += "| %s | %s |\n" % (name, " | ".join(cells))
    return out


def plot(out, sweep, configs, target):
    if shutil.which("gnuplot") is None:
        print("gnuplot not found: no plots", file=sys.stderr)
        return
    with open(os.path.join(out, "sweep.dat"), "w") if sweep else open(os.devnull, "w") as f:
        f.write("# cap tpot_p50 tpot_p99 ttft_p50 ttft_p99 e2e_mean\n")
        for cap, s in sweep:
            f.write("%d %g %g %g %g %g\n" % (cap, s["tpot_p50"], s["tpot_p99"], s["ttft_p50"],
                                              s["ttft_p99"], s["e2e_mean"]))
    with open(os.path.join(out, "compare.dat"), "w") as f:
        f.write("# index config within lo hi tpot_p99 lo hi ttft_p99 lo hi throughput lo hi "
                "requests_within lo hi\n")
        for i, (name, runs) in enumerate(configs):
            cells = []
            for key in ("within", "tpot_p99", "ttft_p99", "throughput", "requests_within"):
                cells += ["%g" % v for v in spread([r[key] for r in runs])]
            label = name.split(" ")[0]
            if name.startswith("(c) at "):
                label += name.split(" ")[2]  # (c) at 40 ms: (c)40
            f.write('%d "%s" %s\n' % (i, label, " ".join(cells)))
    script = """
set terminal pngcairo size 900,560
set output 'sweep.png'
set title 'Fixed step caps on the burst replay (one run each)'
set logscale x 2
set xlabel 'max_num_batched_tokens'
set ylabel 'TPOT (ms)'
set y2label 'TTFT and mean E2E (ms)'
set ytics nomirror
set y2tics
set key top center
plot 'sweep.dat' using 1:2 with linespoints title 'TPOT p50', \
     '' using 1:3 with linespoints title 'TPOT p99', \
     '' using 1:4 axes x1y2 with linespoints title 'TTFT p50', \
     '' using 1:6 axes x1y2 with linespoints title 'E2E mean'
""" if sweep else ""
    script += """
set terminal pngcairo size %(width)d,400
set output 'compare.png'
unset logscale
unset y2label
unset y2tics
set ytics mirror
set multiplot layout 1,5 title '%(what)s; target %(target).1f ms'
set style fill solid 0.5
set boxwidth 0.6
set xrange [-0.6:%(last)g]
set key off
set xlabel ''
set title 'gaps within target (%%)'
set ylabel ''
set yrange [0:100]
plot 'compare.dat' using 1:3:xtic(2) with boxes, '' using 1:3:4:5 with yerrorbars lc rgb 'black'
set title 'requests, TPOT within target (%%)'
plot 'compare.dat' using 1:15:xtic(2) with boxes, '' using 1:15:16:17 with yerrorbars lc rgb 'black'
set autoscale y
set yrange [0:*]
set title 'TPOT p99 (ms)'
plot 'compare.dat' using 1:6:xtic(2) with boxes, '' using 1:6:7:8 with yerrorbars lc rgb 'black'
set title 'TTFT p99 (ms, log scale)'
set logscale y
set yrange [*:*]
plot 'compare.dat' using 1:9:xtic(2) with boxes, '' using 1:9:10:11 with yerrorbars lc rgb 'black'
set title 'tokens/s (prompt + generated)'
unset logscale y
set yrange [0:*]
plot 'compare.dat' using 1:12:xtic(2) with boxes, '' using 1:12:13:14 with yerrorbars lc rgb 'black'
unset multiplot
""" % {"target": target, "last": len(configs) - 0.4, "width": 1500 + 125 * max(0, len(configs) - 3),
       "what": "Medians of %d alternating runs, bars min-max" % len(configs[0][1])
       if len(configs[0][1]) > 1 else "One run each (deterministic)"}
    with open(os.path.join(out, "plots.gp"), "w") as f:
        f.write(script)
    subprocess.run(["gnuplot", "plots.gp"], cwd=out, check=True)


def without_nan(value):
    """`value` with NaN (not measured) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def write_report(out, results):
    """runs.md, table.md and the plots, from results.json's contents."""
    sweep = [(row["cap"], row) for row in results["sweep"]]
    configs = list(results["configs"].items())
    runs = len(configs[0][1])
    with open(os.path.join(out, "runs.md"), "w") as f:
        f.write("# Every run\n\n")
        if sweep:
            f.write("## Sweep (no target: nothing counted within one)\n\n")
            f.write(table([("cap %d" % c, [s]) for c, s in sweep], False) + "\n")
        for r in range(runs):
            f.write("## Round %d\n\n" % (r + 1))
            f.write(table([(n, [rs[r]]) for n, rs in configs], False) + "\n")
        f.write("## The planner's steps, by round (from the router's step trace)\n\n")
        planners = len(configs) - 2
        for i, why in enumerate(results["planner_budget_reasons"]):
            f.write("- round %d: %s\n" % (i // planners + 1, ", ".join(
                "%s %s" % kv for kv in sorted(why.items()))))
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table(configs, True))
    print(table(configs, True))
    plot(out, sweep, configs, results["target_ms"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.environ.get("SHIFT_BINARY_DIR", "build"))
    parser.add_argument("--sim", action="store_true",
                        help="shift-sim on 8xH200 serving Llama-3.3-70B FP8 (bench/sim's "
                        "fitted profile) instead of a CPU cluster; deterministic: --runs=1")
    parser.add_argument("--out")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--trace", default=os.path.join(DATA, "mooncake_conversation_trace.jsonl"))
    parser.add_argument("--requests", type=int, help="trace rows replayed")
    parser.add_argument("--length_scale", type=float)
    parser.add_argument("--time_scale", type=float)
    parser.add_argument("--max_output_tokens", type=int, default=2048)
    parser.add_argument("--caps")
    parser.add_argument("--target_ms", type=float, default=0,
                        help="skip the sweep's choice: this target, and --best_cap")
    parser.add_argument("--best_cap", type=int, default=0)
    parser.add_argument("--sweep_from", help="reuse the sweep (and its choice) of this "
                        "results.json instead of running one")
    parser.add_argument("--also_targets", default="",
                        help="more planner configurations: (c) at these targets (ms, commas)")
    parser.add_argument("--with_ttft", action="store_true",
                        help="a fourth configuration, (d): (c) with --ttft_slo_ms at the best "
                        "cap's TTFT p99")
    parser.add_argument("--report_from", help="only write the tables and plots of this "
                        "results.json (into --out)")
    args = parser.parse_args()
    # What each mode runs unless told.
    defaults = dict(out=os.path.join(ROOT, "bench", "sim", "results", "step-budget"), runs=1,
                    requests=2000, time_scale=0.4, length_scale=1, caps="512,1024,2048,4096,8192,16384") \
        if args.sim else dict(out=os.path.join(ROOT, "bench", "results", "step-budget"), runs=3,
                              requests=80, length_scale=8, time_scale=0.4,
                              caps="256,512,1024,2048")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    os.environ["SHIFT_BINARY_DIR"] = args.build
    os.makedirs(args.out, exist_ok=True)
    if args.report_from:
        with open(args.report_from) as f:
            write_report(args.out, json.load(f))
        return
    tmp = tempfile.mkdtemp(prefix="shift-budget-")
    try:
        model = os.path.join(tmp, "model")
        if not args.sim:
            subprocess.run([os.path.join(args.build, "tools", "shift-mkmodel"),
                            "--out=" + model] + MODEL_FLAGS, check=True, capture_output=True)
        sweep = []
        if args.sweep_from:
            with open(args.sweep_from) as f:
                before = json.load(f)
            sweep = [(row["cap"], row) for row in before["sweep"]]
            best_cap, target = before["best_cap"], before["target_ms"]
        elif args.target_ms > 0:
            best_cap, target = args.best_cap, args.target_ms
        else:
            for cap in [int(c) for c in args.caps.split(",")]:
                s, _ = run(args, tmp, model, "cap%d" % cap,
                           ["--max_num_batched_tokens=%d" % cap], 0)
                print("sweep cap %d: %s" % (cap, json.dumps(s)), flush=True)
                sweep.append((cap, s))
            best_cap, best = min(sweep, key=lambda cs: cs[1]["e2e_mean"])
            target = round(best["tpot_p50"], 1)
        print("best cap %d, target %.1f ms" % (best_cap, target), flush=True)
        names = ["(a) cap %d" % DEFAULT_CAP, "(b) cap %d" % best_cap,
                 "(c) cap %d, --tpot_slo_ms=%g" % (DEFAULT_CAP, target)]
        flags = [["--max_num_batched_tokens=%d" % DEFAULT_CAP],
                 ["--max_num_batched_tokens=%d" % best_cap],
                 ["--max_num_batched_tokens=%d" % DEFAULT_CAP, "--tpot_slo_ms=%g" % target]]
        for extra in [float(t) for t in args.also_targets.split(",") if t]:
            names.append("(c) at %g ms" % extra)
            flags.append(["--max_num_batched_tokens=%d" % DEFAULT_CAP, "--tpot_slo_ms=%g" % extra])
        if args.with_ttft:
            # (d): (c) with a time-to-first-token target, the best cap's TTFT p99.
            best = dict(sweep)[best_cap]
            ttft = round(best["ttft_p99"])
            names.append("(d) (c) and --ttft_slo_ms=%d" % ttft)
            flags.append(flags[2] + ["--ttft_slo_ms=%d" % ttft])
        by_config = [[] for _ in names]
        reasons = []
        for r in range(args.runs):
            for i, name in enumerate(names):
                s, why = run(args, tmp, model, "run%d-%d" % (r, i), flags[i], target)
                s["run"] = r
                by_config[i].append(s)
                if i >= 2:
                    reasons.append(dict(why, config=name.split(",")[0]))
                print("round %d %s: %s" % (r + 1, name, json.dumps(s)), flush=True)
        results = {"args": {k: v for k, v in vars(args).items()
                            if k not in ("build", "out", "trace", "sweep_from", "report_from")},
                   "trace": os.path.basename(args.trace),
                   "sweep": [{"cap": c, **s} for c, s in sweep], "best_cap": best_cap,
                   "target_ms": target, "configs": dict(zip(names, by_config)),
                   "planner_budget_reasons": reasons}
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(without_nan(results), f, indent=1)
        write_report(args.out, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
