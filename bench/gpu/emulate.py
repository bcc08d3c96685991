#!/usr/bin/env python3
"""One rank's share of a P-rank step, measured alone, for a model too large
to load whole: rank r of a P-rank group (shift-generate --emulate_world_size)
on a cut-down copy of the model at two layer counts, scaled to the full
depth. Standard library only; run by tools/gpu-check's emulate stage (on a
GPU) and by its test (on the CPU, a tiny model).

    emulate.py --generate BIN --model DIR --work DIR [options]

The model directory holds weights for at least the largest --layers count;
each count gets a directory of its own whose config.json says that many
layers and whose other files link to the model's (the loader reads tensors
by name, so the deeper layers are simply not read).

Every run (a mode and a layer count) is one shift-generate process that
serves phases one after another: for each --batches B, B requests of
--context random tokens decoding together, then one --prefill-token prompt
alone. A phase's figure is the median over its steps of that shape: the
decode steps where all B sequences decode (the first left out: it pays
one-time set-up) and the one prefill step.

Step figures t(L) are a fixed part plus a part per layer, so two layer
counts L1 < L2 give the full depth T exactly when the layers cost the same:
t(T) = t(L2) + (t(L2) - t(L1)) (T - L2) / (L2 - L1). Collective bytes and
GEMM FLOPs scale the same way, exactly.

Writes --profile_out (shift-generate's --compute_profile format, one line
per mode and shape, scaled to T layers; shift-sim --compute_profile reads
it) and --table_out (markdown). With --check_batches, also runs one real
rank (P = 1) on those decode batches at L2 layers and checks that the
emulated rank's TP GEMM FLOPs per step are exactly 1/P of it.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time


def ints(text):
    return [int(x) for x in text.split(",") if x]


def layer_dir(model, work, layers):
    """A model directory with `layers` layers over `model`'s files."""
    path = os.path.join(work, "model-%d-layers" % layers)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    if config["num_hidden_layers"] < layers:
        sys.exit("emulate.py: %s has %d layers, fewer than %d" %
                 (model, config["num_hidden_layers"], layers))
    config["num_hidden_layers"] = layers
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in os.listdir(model):
        link = os.path.join(path, name)
        if name != "config.json" and not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(model, name)), link)
    return path, config


def phases(args, vocab):
    """The requests, phase by phase, and each phase's step shape."""
    rng = random.Random(args.seed)
    requests, shapes = [], []
    # A phase arrives before a step far beyond the previous phase's end, so
    # it is queued when the previous one has drained.
    for i, b in enumerate(args.batches):
        # Long enough that every sequence still decodes once the last prompt
        # of the phase has been prefilled.
        prefill_steps = -(-b * args.context // args.chunk)
        max_tokens = prefill_steps + args.decode_steps + 1
        for _ in range(b):
            requests.append({"prompt_ids": [rng.randrange(vocab) for _ in range(args.context)],
                             "max_tokens": max_tokens, "ignore_eos": True,
                             "arrive_before_step": i * 1000000 + 1})
        shapes.append(("decode", b))
    if args.prefill > 0:
        requests.append({"prompt_ids": [rng.randrange(vocab) for _ in range(args.prefill)],
                         "max_tokens": 1, "ignore_eos": True,
                         "arrive_before_step": len(args.batches) * 1000000 + 1})
        shapes.append(("prefill", args.prefill))
    return requests, shapes


def matches(line, shape):
    kind, n = shape
    if kind == "decode":
        return line["decodes"] == n and line["sequences"] == n and line["tokens"] == n
    return line["tokens"] == n and line["decodes"] == 0 and line["sequences"] == 1


def run(args, model_dir, world, mode, requests_path, batches):
    """One shift-generate process; its compute-profile lines."""
    profile = os.path.join(args.work, "profile-%s-%d-%s-%d.jsonl" %
                           (mode, world, os.path.basename(model_dir), len(batches)))
    if os.path.exists(profile):
        os.remove(profile)
    cmd = [args.generate, "--model=" + model_dir, "--device=" + args.device,
           "--requests=" + requests_path, "--shift_policy=" + mode,
           "--emulate_world_size=%d" % world, "--emulate_rank=%d" % (args.rank if world > 1 else 0),
           "--compute_profile=" + profile, "--enable_prefix_caching=false",
           "--max_num_seqs=%d" % max(batches + [1]),
           "--max_num_batched_tokens=%d" % max(args.chunk, args.prefill),
           "--kv_cache_bytes=%d" % args.kv_cache_bytes, "--threads=%d" % args.threads]
    start = time.time()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit("emulate.py: %s failed (exit %d):\n%s" %
                 (" ".join(cmd), done.returncode, done.stderr[-3000:]))
    with open(profile) as f:
        lines = [json.loads(x) for x in f if x.strip()]
    print("ran %s P=%d %s: %d steps in %.1f s" %
          (mode, world, os.path.basename(model_dir), len(lines), time.time() - start), flush=True)
    return lines


FIELDS = ("step_s", "collective_s", "collective_bytes", "compute_s", "gemm_flops")


def figure(lines, shape):
    """The median of each field over the steps of `shape`, and the shape's
    own fields from one of them."""
    steps = [x for x in lines if matches(x, shape)]
    if not steps:
        return None
    if len(steps) > 2:
        steps = steps[1:]
    out = {k: statistics.median(x[k] for x in steps) for k in FIELDS}
    # The step whose context is the median's, for the shape fields.
    mid = steps[len(steps) // 2]
    for k in ("world_size", "rank", "mode", "tokens", "sequences", "decodes", "max_context",
              "attention"):
        out[k] = mid[k]
    out["steps"] = len(steps)
    return out


def scale(small, large, l1, l2, target):
    out = dict(large)
    for k in FIELDS:
        per_layer = (large[k] - small[k]) / (l2 - l1)
        out[k] = large[k] + per_layer * (target - l2)
        out[k + "_per_layer"] = per_layer
        out[k + "_fixed"] = large[k] - per_layer * l2
    for k in ("collective_bytes", "gemm_flops"):
        out[k] = int(round(out[k]))
    out["layers"] = target
    out["measured_layers"] = [l1, l2]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate", required=True, help="the shift-generate binary")
    p.add_argument("--model", required=True, help="model directory (weights for >= L2 layers)")
    p.add_argument("--work", required=True, help="scratch directory")
    p.add_argument("--device", default="cuda")
    p.add_argument("--world_size", type=int, default=8)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--layers", type=ints, default=[4, 8], help="two layer counts, L1,L2")
    p.add_argument("--target_layers", type=int, default=80)
    p.add_argument("--modes", default="tp,sp", help="modes to profile (empty: only the check)")
    p.add_argument("--batches", type=ints, default=[1, 16, 64, 256])
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--prefill", type=int, default=4096)
    p.add_argument("--decode_steps", type=int, default=8)
    p.add_argument("--chunk", type=int, default=16384, help="--max_num_batched_tokens")
    p.add_argument("--kv_cache_bytes", type=int, default=12 << 30)
    p.add_argument("--threads", type=int, default=1, help="CPU backend threads")
    p.add_argument("--check_batches", type=ints, default=[],
                   help="decode batches a real single rank also runs, for the FLOPs check")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile_out", required=True)
    p.add_argument("--table_out", required=True)
    p.add_argument("--title", default="")
    args = p.parse_args()
    if len(args.layers) != 2 or not 0 < args.layers[0] < args.layers[1]:
        sys.exit("emulate.py: --layers takes two increasing layer counts, L1,L2")
    l1, l2 = args.layers
    os.makedirs(args.work, exist_ok=True)
    dirs = {}
    for layers in args.layers:
        dirs[layers], config = layer_dir(args.model, args.work, layers)
    requests, shapes = phases(args, config["vocab_size"])
    requests_path = os.path.join(args.work, "requests.jsonl")
    with open(requests_path, "w") as f:
        for r in requests:
            f.write(json.dumps(r) + "\n")

    rows, failures = [], []
    for mode in [m for m in args.modes.split(",") if m]:
        measured = {}
        for layers in args.layers:
            lines = run(args, dirs[layers], args.world_size, mode, requests_path, args.batches)
            measured[layers] = {shape: figure(lines, shape) for shape in shapes}
        for shape in shapes:
            small, large = measured[l1][shape], measured[l2][shape]
            if small is None or large is None:
                failures.append("%s %s %d: no step of that shape ran" % ((mode,) + shape))
                continue
            rows.append((shape, scale(small, large, l1, l2, args.target_layers)))

    with open(args.profile_out, "w") as f:
        for _, row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    checks = []
    if args.check_batches and args.world_size > 1:
        check_requests, check_shapes = phases(
            argparse.Namespace(**dict(vars(args), batches=args.check_batches, prefill=0)),
            config["vocab_size"])
        check_path = os.path.join(args.work, "check-requests.jsonl")
        with open(check_path, "w") as f:
            for r in check_requests:
                f.write(json.dumps(r) + "\n")
        single = run(args, dirs[l2], 1, "tp", check_path, args.check_batches)
        emulated = run(args, dirs[l2], args.world_size, "tp", check_path, args.check_batches)
        for shape in check_shapes:
            one, share = figure(single, shape), figure(emulated, shape)
            if one is None or share is None:
                failures.append("check %s %d: no step of that shape ran" % shape)
                continue
            exact = one["gemm_flops"] == args.world_size * share["gemm_flops"]
            checks.append("| %d | %d | %d | %s | %.3f | %.3f |" %
                          (shape[1], one["gemm_flops"], share["gemm_flops"],
                           "yes" if exact else "**no**", 1e3 * one["step_s"],
                           1e3 * share["step_s"]))
            if not exact:
                failures.append("decode batch %d: P=1 GEMM FLOPs %d are not %d x %d" %
                                (shape[1], one["gemm_flops"], args.world_size,
                                 share["gemm_flops"]))

    out = []
    out.append("%s\n" % (args.title or "Rank %d of %d, emulated" % (args.rank, args.world_size)))
    out.append("Measured at %d and %d layers, scaled to %d; context %d; median over each "
               "shape's steps. compute = step - emulated collective copies; collective bytes "
               "are what a real rank receives per step.\n" %
               (l1, l2, args.target_layers, args.context))
    out.append("| mode | step | tokens | context | compute ms | per layer ms | fixed ms | "
               "collective MB | GEMM GFLOP | GEMM TFLOP/s of compute |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for (kind, n), r in rows:
        label = "decode %d" % n if kind == "decode" else "prefill %d" % n
        out.append("| %s | %s | %d | %d | %.3f | %.4f | %.3f | %.2f | %.3f | %.1f |" %
                   (r["mode"], label, r["tokens"], r["max_context"], 1e3 * r["compute_s"],
                    1e3 * r["compute_s_per_layer"], 1e3 * r["compute_s_fixed"],
                    r["collective_bytes"] / 1e6, r["gemm_flops"] / 1e9,
                    r["gemm_flops"] / 1e12 / max(r["compute_s"], 1e-12)))
    if checks:
        out.append("\nOne real rank against the emulated rank %d of %d, TP, %d layers: GEMM FLOPs "
                   "per decode step (from the backend's counters) and step time.\n" %
                   (args.rank, args.world_size, l2))
        out.append("| batch | P=1 GEMM FLOPs | rank's GEMM FLOPs | exactly 1/P | P=1 step ms | "
                   "rank's step ms |")
        out.append("|---|---|---|---|---|---|")
        out.extend(checks)
    if failures:
        out.append("\nFailures:\n" + "\n".join("- " + x for x in failures))
    table = "\n".join(out) + "\n"
    with open(args.table_out, "w") as f:
        f.write(table)
    print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
