#!/usr/bin/python3
"""How well the cost policy predicted step times, from a router's
--step_trace (one JSON line per step). Skips the first --warmup predicted
steps, then prints the relative error |predicted - measured| / measured:
median, p90, the share within 10/20/30%, overall and by step size, and the
total predicted vs measured seconds.

    tests/bench/step_trace_report.py STEPS.jsonl [--warmup=200]
"""

import argparse
import json
import sys


def summary(errors):
    if not errors:
        return "no predicted steps"
    e = sorted(errors)
    n = len(e)
    within = lambda bound: 100.0 * sum(x <= bound for x in e) / n
    return ("%5d steps: median %5.1f%%, p90 %5.1f%%; within 10%% %3.0f%%, 20%% %3.0f%%, "
            "30%% %3.0f%%" % (n, 100 * e[n // 2], 100 * e[min(n - 1, 9 * n // 10)],
                              within(0.1), within(0.2), within(0.3)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--warmup", type=int, default=200,
                        help="predicted steps to skip before counting")
    args = parser.parse_args()
    steps = []
    with open(args.trace) as f:
        for number, line in enumerate(f, 1):
            try:
                steps.append(json.loads(line))
            except ValueError as e:
                sys.exit("%s:%d: %s" % (args.trace, number, e))
    predicted = [s for s in steps if s.get("predicted_s") is not None][args.warmup:]
    modes = {m: sum(s["mode"] == m for s in steps) for m in ("tp", "sp")}
    print("%d steps (%d TP, %d SP), %d predicted after %d of warm-up" %
          (len(steps), modes["tp"], modes["sp"], len(predicted), args.warmup))
    error = lambda s: abs(s["predicted_s"] - s["measured_s"]) / s["measured_s"]
    print("  all               " + summary([error(s) for s in predicted]))
    for name, low, high in (("<= 8 tokens", 0, 8), ("9-256 tokens", 9, 256),
                            ("> 256 tokens", 257, 1 << 62)):
        print("  %-17s %s" % (name, summary([error(s) for s in predicted
                                              if low <= s["tokens"] <= high])))
    for mode in ("tp", "sp"):
        print("  %-17s %s" % (mode.upper() + " steps",
                              summary([error(s) for s in predicted if s["mode"] == mode])))
    if predicted:
        print("  total: predicted %.2f s, measured %.2f s" %
              (sum(s["predicted_s"] for s in predicted), sum(s["measured_s"] for s in predicted)))


if __name__ == "__main__":
    main()
