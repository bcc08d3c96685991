#!/usr/bin/env python3
"""Checks shift against Hugging Face transformers and tokenizers, independent
implementations of the same model and tokenizer formats. Needs torch,
transformers and tokenizers (not part of the test suite: run it where they
are installed, on the files tests/reference/prepare.sh makes).

    transformers_reference.py logits DUMP_DIR      # every MODEL/ with its logits.json
    transformers_reference.py logits-bf16 DUMP_DIR # the same in bf16 on the GPU, for
                                                   # logits shift computed with --device=cuda
    transformers_reference.py tokens DUMP_DIR      # every NAME.tokenizer.json with strings

A checkpoint with 128x128 block-scaled FP8 weights (quant_method "fp8") is
compared as the model its codes times weight_scale_inv make (transformers'
own FP8 path needs a GPU and quantizes activations, so it is not the
reference of shift's dequantized weights).

Exits 1 when a check fails, printing one line per comparison.
"""

import glob
import json
import os
import sys
import tempfile


def load_model(model_dir, dtype, keep):
    """The model transformers reads from model_dir; FP8 block-scaled weights
    dequantized first into a directory `keep` holds on to."""
    from transformers import AutoModelForCausalLM

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    quant = config.get("quantization_config") or {}
    if quant.get("quant_method") != "fp8":
        return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype)
    import shutil
    import torch
    from safetensors.torch import load_file, save_file

    block = quant["weight_block_size"]
    tensors = {}
    for path in glob.glob(os.path.join(model_dir, "*.safetensors")):
        tensors.update(load_file(path))
    plain = {}
    for name, t in tensors.items():
        if name.endswith(".weight_scale_inv"):
            continue
        scale = tensors.get(name + "_scale_inv")
        if scale is not None:
            # Despite its name, weight_scale_inv multiplies.
            full = scale.float().repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
            t = t.float() * full[:t.shape[0], :t.shape[1]]
        plain[name] = t.float().contiguous()
    holder = tempfile.TemporaryDirectory()  # removed when `keep` lets it go
    keep.append(holder)
    out = holder.name
    del config["quantization_config"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    for name in os.listdir(model_dir):
        if name.startswith("tokenizer") or name == "generation_config.json":
            shutil.copy(os.path.join(model_dir, name), out)
    save_file(plain, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    return AutoModelForCausalLM.from_pretrained(out, torch_dtype=dtype)


def check_logits(root):
    import torch

    ok = True
    keep = []
    for dump_path in sorted(glob.glob(os.path.join(root, "*", "logits.json"))):
        model_dir = os.path.dirname(dump_path)
        with open(dump_path) as f:
            dump = json.load(f)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_model(model_dir, torch.float32, keep)
        model.to(device).eval()
        prompt, generated = dump["prompt_ids"], dump["generated_ids"]
        # Every generated token but the last is input; row i of ours is the
        # distribution after prompt + generated[:i].
        ids = torch.tensor([prompt + generated[:-1]], device=device)
        with torch.no_grad():
            # fp32 matmuls without TF32, so the reference itself is exact to
            # about 1e-6.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            ref = model(ids).logits[0, len(prompt) - 1:].double().cpu()
        ours = torch.tensor(dump["logits"], dtype=torch.float64)
        diff = (ours - ref).abs().max().item()
        scale = ref.abs().max().item()
        ref_argmax = ref.argmax(-1).tolist()
        # Greedy tokens agree unless the reference's top two are closer than
        # the difference we measured.
        top2 = ref.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).tolist()
        disagree = [i for i, (a, b) in enumerate(zip(ref_argmax, generated))
                    if a != b and margin[i] > 2 * diff]
        passed = diff <= 1e-3 * max(scale, 1.0) and not disagree
        ok &= passed
        print("%s %s: %d prompt + %d generated tokens; max |logit diff| %.3g (logits up to %.3g, "
              "relative %.2g); greedy tokens %s" %
              ("PASS" if passed else "FAIL", os.path.basename(model_dir), len(prompt),
               len(generated), diff, scale, diff / max(scale, 1e-30),
               "all equal" if ref_argmax == generated else
               "differ at %s (ties within the difference elsewhere)" % disagree))
    return ok


# Bounds for bf16 on both sides: teacher-forced top-1 agreement and the
# normalised mean squared error of the logits.
BF16_MIN_TOP1 = 0.99
BF16_MAX_NMSE = 1e-2


def check_logits_bf16(root):
    import torch

    if not torch.cuda.is_available():
        print("FAIL: logits-bf16 compares on a GPU and torch sees none")
        return False
    ok = True
    keep = []
    for dump_path in sorted(glob.glob(os.path.join(root, "*", "logits.json"))):
        model_dir = os.path.dirname(dump_path)
        with open(dump_path) as f:
            dump = json.load(f)
        model = load_model(model_dir, torch.bfloat16, keep)
        model.to("cuda").eval()
        prompt, generated = dump["prompt_ids"], dump["generated_ids"]
        # Teacher-forced: transformers is fed shift's tokens.
        ids = torch.tensor([prompt + generated[:-1]], device="cuda")
        with torch.no_grad():
            ref = model(ids).logits[0, len(prompt) - 1:].double().cpu()
        ours = torch.tensor(dump["logits"], dtype=torch.float64)
        agree = ours.argmax(-1) == ref.argmax(-1)
        top1 = agree.double().mean().item()
        nmse = (((ours - ref) ** 2).sum() / (ref ** 2).sum()).item()
        # Random models' logits are nearly flat: where the reference's top
        # two lie closer than 4x the RMS logit difference, a different top-1
        # is a tie, not a fault. Agreement is bounded on the other positions
        # (tests/gpu/cuda_engine_test.cc counts the same way).
        rms = ((ours - ref) ** 2).mean().sqrt().item()
        top2 = ref.topk(2, dim=-1).values
        decisive = (top2[:, 0] - top2[:, 1]) > 4 * rms
        decisive_top1 = (agree[decisive].double().mean().item() if decisive.any() else 1.0)
        passed = decisive_top1 >= BF16_MIN_TOP1 and nmse < BF16_MAX_NMSE
        ok &= passed
        print("%s %s (bf16): %d positions teacher-forced; top-1 agreement %.4f over the %d "
              "decisive ones (bound %.2f), %.4f over all; logit NMSE %.3g (bound %.0e)" %
              ("PASS" if passed else "FAIL", os.path.basename(model_dir), len(generated),
               decisive_top1, int(decisive.sum().item()), BF16_MIN_TOP1, top1, nmse,
               BF16_MAX_NMSE))
    return ok


def check_tokens(root):
    from tokenizers import Tokenizer

    ok = True
    for path in sorted(glob.glob(os.path.join(root, "*.tokenizer.json"))):
        name = os.path.basename(path)[:-len(".tokenizer.json")]
        tok = Tokenizer.from_file(path)
        with open(os.path.join(root, "strings.jsonl")) as f:
            strings = [json.loads(line) for line in f if line.strip()]
        with open(os.path.join(root, name + ".ids.txt")) as f:
            ours = [[int(x) for x in line.split()] for line in f.read().split("\n")[:len(strings)]]
        bad = [i for i, s in enumerate(strings)
               if tok.encode(s, add_special_tokens=False).ids != ours[i]]
        total = sum(len(x) for x in ours)
        ok &= not bad
        print("%s %s: %d strings, %d tokens; %d differ%s" %
              ("PASS" if not bad else "FAIL", name, len(strings), total, len(bad),
               "" if not bad else ", first %r: ours %s, tokenizers %s" %
               (strings[bad[0]], ours[bad[0]],
                tok.encode(strings[bad[0]], add_special_tokens=False).ids)))
    return ok


def main():
    checks = {"logits": check_logits, "logits-bf16": check_logits_bf16, "tokens": check_tokens}
    if len(sys.argv) != 3 or sys.argv[1] not in checks:
        print(__doc__, file=sys.stderr)
        return 2
    check = checks[sys.argv[1]]
    return 0 if check(sys.argv[2]) else 1


if __name__ == "__main__":
    sys.exit(main())
