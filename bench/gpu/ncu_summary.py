#!/usr/bin/env python3
"""Sums an Nsight Compute raw CSV (ncu --csv --page raw --section
SpeedOfLight) by kernel: launches, total and mean duration, and the mean
DRAM and SM throughput as a share of the GPU's peak. Standard library only.

    ncu_summary.py NCU.csv
"""

import csv
import sys


def column(header, part):
    for i, name in enumerate(header):
        if part in name:
            return i
    return None


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if start is None:
        print("ncu_summary: no 'Kernel Name' header in %s" % sys.argv[1], file=sys.stderr)
        return 1
    header = rows[start]
    name_at = header.index("Kernel Name")
    time_at = column(header, "gpu__time_duration")
    dram_at = column(header, "dram__throughput")
    sm_at = column(header, "sm__throughput")
    if time_at is None:
        print("ncu_summary: no gpu__time_duration column", file=sys.stderr)
        return 1
    # A row of units follows the header in raw pages.
    units = rows[start + 1] if len(rows) > start + 1 else []
    scale = 1e-3 if units and units[time_at].strip() == "nsecond" else 1.0  # to microseconds
    kernels = {}
    for r in rows[start + 1:]:
        if len(r) <= max(time_at, name_at):
            continue
        t = number(r[time_at])
        if t is None:
            continue
        k = kernels.setdefault(r[name_at][:70], {"n": 0, "us": 0.0, "dram": 0.0, "sm": 0.0})
        k["n"] += 1
        k["us"] += t * scale
        for key, at in (("dram", dram_at), ("sm", sm_at)):
            v = number(r[at]) if at is not None and at < len(r) else None
            k[key] += v or 0.0
    total = sum(k["us"] for k in kernels.values())
    print("| kernel | launches | total us | share | mean us | DRAM % of peak | SM % of peak |")
    print("|---|---|---|---|---|---|---|")
    for name, k in sorted(kernels.items(), key=lambda kv: -kv[1]["us"]):
        print("| %s | %d | %.1f | %.1f%% | %.2f | %.1f | %.1f |" %
              (name, k["n"], k["us"], 100 * k["us"] / max(total, 1e-9), k["us"] / k["n"],
               k["dram"] / k["n"], k["sm"] / k["n"]))
    print("total %.1f us over %d launches" % (total, sum(k["n"] for k in kernels.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
