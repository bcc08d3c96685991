#!/usr/bin/env python3
"""The PyTorch half of shift's GPU benchmarks (run by tools/gpu-check's bench
stages, on the GPU host, with the host's torch and transformers).

    torch_bench.py ceilings
        The two ceilings measured in this run: device-to-device copy
        bandwidth (bytes read + written) and the bf16 GEMM rate on random data.
    torch_bench.py weights MODEL_DIR [--seed S]
        Fills a model directory that shift-mkmodel wrote with --config_only
        with random bf16 weights in the Hugging Face Llama layout, made on the
        GPU (an 8B model in seconds instead of minutes on the CPU).
    torch_bench.py hf-decode MODEL_DIR --batch B[,B...] --context C --steps N [--compile]
        transformers' generate with a static KV cache, greedy: decode seconds
        per step, from the difference of an (N+1)-token and a 1-token run.

Each result is one line 'key=value ...' that the stage's table reads.
"""

import argparse
import json
import os
import sys
import time


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def ceilings(_args):
    import torch

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print("device name=%r sms=%d memory_gib=%.1f torch=%s cuda=%s" %
          (props.name, props.multi_processor_count, props.total_memory / 2**30,
           torch.__version__, torch.version.cuda))
    # Copy: 4 GiB one way, rotated over two source buffers so L2 holds none.
    n = 1 << 31  # bf16 elements: 4 GiB
    srcs = [torch.randn(n, device=dev, dtype=torch.bfloat16) for _ in range(2)]
    dst = torch.empty_like(srcs[0])
    times = []
    for i in range(12):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(srcs[i % 2])
        b.record()
        b.synchronize()
        if i >= 2:
            times.append(a.elapsed_time(b) / 1e3)
    t = median(times)
    print("copy bytes=%d seconds=%.6f gbps=%.1f" % (2 * n * 2, t, 2 * n * 2 / t / 1e9))
    del srcs, dst
    m = 8192
    x = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    y = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    times = []
    for i in range(13):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        x @ y
        b.record()
        b.synchronize()
        if i >= 3:
            times.append(a.elapsed_time(b) / 1e3)
    t = median(times)
    print("gemm m=n=k=%d seconds=%.6f tflops=%.1f" % (m, t, 2 * m**3 / t / 1e12))


def llama_tensors(config):
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // heads
    v = config["vocab_size"]
    bias = config.get("attention_bias", False)
    out = [("model.embed_tokens.weight", (v, h)), ("model.norm.weight", (h,))]
    if not config.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h)))
    for i in range(config["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (heads * d, h)),
                (p + "self_attn.k_proj.weight", (kv * d, h)),
                (p + "self_attn.v_proj.weight", (kv * d, h)),
                (p + "self_attn.o_proj.weight", (h, heads * d)),
                (p + "mlp.gate_proj.weight", (inter, h)),
                (p + "mlp.up_proj.weight", (inter, h)),
                (p + "mlp.down_proj.weight", (h, inter))]
        if bias:
            out += [(p + "self_attn.q_proj.bias", (heads * d,)),
                    (p + "self_attn.k_proj.bias", (kv * d,)),
                    (p + "self_attn.v_proj.bias", (kv * d,))]
    return out


def weights(args):
    import torch
    from safetensors.torch import save_file

    with open(os.path.join(args.model, "config.json")) as f:
        config = json.load(f)
    g = torch.Generator(device="cuda").manual_seed(args.seed)
    start = time.time()
    shard, shard_bytes, files, index = {}, 0, [], {}

    def flush():
        nonlocal shard, shard_bytes
        if not shard:
            return
        name = "model-%05d.safetensors" % (len(files) + 1)
        save_file(shard, os.path.join(args.model, name), metadata={"format": "pt"})
        files.append(name)
        for k in shard:
            index[k] = name
        shard, shard_bytes = {}, 0

    for name, shape in llama_tensors(config):
        if len(shape) == 1:  # norm gains near 1, biases small
            t = (1.0 if "norm" in name else 0.0) + 0.05 * torch.randn(
                shape, generator=g, device="cuda")
        else:  # scaled so activations stay O(1) through the layers
            t = torch.randn(shape, generator=g, device="cuda") / shape[1]**0.5
        shard[name] = t.to(torch.bfloat16).cpu()
        shard_bytes += shard[name].numel() * 2
        if shard_bytes >= 4 << 30:
            flush()
    flush()
    with open(os.path.join(args.model, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f)
    for stale in ("model.safetensors",):
        p = os.path.join(args.model, stale)
        if os.path.exists(p):
            os.remove(p)
    print("weights files=%d seconds=%.1f" % (len(files), time.time() - start))


def hf_decode(args):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to("cuda")
    model.eval()
    vocab = min(model.config.vocab_size, 2000)
    for batch in [int(b) for b in args.batch.split(",")]:
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(3, vocab, (batch, args.context), generator=g).to("cuda")

        def run(n):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False,
                               cache_implementation="static",
                               disable_compile=not args.compile, pad_token_id=0)
            torch.cuda.synchronize()
            return time.perf_counter() - t

        run(args.steps + 1)  # warm-up (and compilation, with --compile)
        one = median([run(1) for _ in range(3)])
        many = median([run(args.steps + 1) for _ in range(3)])
        print("hf-decode compile=%d batch=%d context=%d steps=%d ms_per_step=%.3f "
              "prefill_ms=%.1f" % (args.compile, batch, args.context, args.steps,
                                   (many - one) / args.steps * 1e3, one * 1e3))
        sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ceilings")
    w = sub.add_parser("weights")
    w.add_argument("model")
    w.add_argument("--seed", type=int, default=1)
    d = sub.add_parser("hf-decode")
    d.add_argument("model")
    d.add_argument("--batch", default="1")
    d.add_argument("--context", type=int, default=1024)
    d.add_argument("--steps", type=int, default=32)
    d.add_argument("--compile", action="store_true")
    args = p.parse_args()
    {"ceilings": ceilings, "weights": weights, "hf-decode": hf_decode}[args.cmd](args)


if __name__ == "__main__":
    main()
