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
    torch_bench.py fast-decode MODEL_DIR --batch B[,B...] --context C --steps N
        A plain PyTorch Llama (the gpt-fast recipe: a static KV cache,
        scaled_dot_product_attention, the decode step compiled with
        torch.compile(mode="reduce-overhead"), greedy on the GPU): decode
        milliseconds per step at each batch, after checking its logits
        against transformers' on one prompt.
    torch_bench.py fast-prefill MODEL_DIR --tokens N[,N...]
        The same model, eager: one prompt of N tokens, milliseconds.
    torch_bench.py check MODEL_DIR DUMP.json [DUMP.json...] [--fp8]
        Teacher-forced check of shift's timed runs (shift-generate
        --dump_logits: the first request's prompt, tokens and logits): the
        same model in PyTorch (bf16; with --fp8, an FP8 checkpoint's
        projections through torch._scaled_mm) fed shift's tokens; top-1
        agreement on decisive positions and logit NMSE against stated
        bounds, per dump. fast-decode and fast-prefill take --fp8 too.

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
    # With a quantization_config (shift-mkmodel --dtype=fp8 --config_only),
    # the projections are FP8 with per-channel scales.
    q = config.get("quantization_config")
    fp8 = q is not None
    ignore = set(q.get("ignore", [])) if q else set()

    def quantized(name):
        module = name.rsplit(".", 1)[0]
        return name.endswith("_proj.weight") and module not in ignore

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
        if fp8 and quantized(name):
            # compressed-tensors: E4M3 codes and a float scale per output row.
            scale = t.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0
            shard[name] = (t / scale).to(torch.float8_e4m3fn).cpu()
            shard[name + "_scale"] = scale.float().cpu()
            shard_bytes += shard[name].numel() + scale.numel() * 4
        else:
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


# The bounds of tests/reference/transformers_reference.py's bf16 check: top-1
# agreement over decisive positions and the logits' normalised MSE.
BF16_MIN_TOP1 = 0.99
BF16_MAX_NMSE = 1e-2


def llama3_inv_freq(config, device):
    """RoPE frequencies as transformers computes them (llama3 scaling too)."""
    import math
    import torch

    d = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = config.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).to(device=device,
                                                                     dtype=torch.float) / d))
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class FastLlama:
    """A Llama (or Qwen 2) forward in plain PyTorch, bf16, on one GPU, with a
    static KV cache [layers][batch][kv heads][max_seq][head_dim] (gpt-fast's
    layout): q/k/v and gate/up fused into one GEMM each, RMSNorm and RoPE as
    transformers computes them, attention by scaled_dot_product_attention
    over the whole cache with a mask of the positions written so far."""

    def __init__(self, model_dir, max_batch, max_seq, fp8=False):
        import torch
        from safetensors.torch import load_file

        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.c = c
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        w = {}
        for name in files:
            w.update(load_file(os.path.join(model_dir, name), device="cuda"))
        bf = torch.bfloat16
        # FP8 weights (compressed-tensors): with fp8, kept as E4M3 codes and a
        # float32 scale per row for torch._scaled_mm; otherwise dequantized
        # with their scale per row, and this model computes in bf16.
        quantized = {}
        for k in [k for k in w if k + "_scale" in w]:
            scale = w.pop(k + "_scale").float().reshape(-1)
            if fp8:
                rows = w[k].shape[0]
                quantized[k] = (w.pop(k), scale.expand(rows).contiguous())
            else:
                w[k] = w[k].float() * scale.reshape(-1, 1)
        w = {k: v.to(bf) for k, v in w.items()}
        w.update(quantized)

        def cat(names):
            parts = [w[n] for n in names]
            if not isinstance(parts[0], tuple):
                return torch.cat(parts)
            codes = torch.cat([c.view(torch.uint8) for c, _ in parts]).view(torch.float8_e4m3fn)
            return (codes, torch.cat([s for _, s in parts]))

        self.heads, self.kv = c["num_attention_heads"], c["num_key_value_heads"]
        self.d = c.get("head_dim") or c["hidden_size"] // self.heads
        self.eps = c["rms_norm_eps"]
        self.embed = w["model.embed_tokens.weight"]
        self.norm = w["model.norm.weight"]
        self.head = w.get("lm_head.weight", self.embed)
        self.layers = []
        for i in range(c["num_hidden_layers"]):
            p = "model.layers.%d." % i
            layer = {
                "in_norm": w[p + "input_layernorm.weight"],
                "post_norm": w[p + "post_attention_layernorm.weight"],
                "wqkv": cat([p + "self_attn.%s_proj.weight" % x for x in "qkv"]),
                "wo": w[p + "self_attn.o_proj.weight"],
                "w13": cat([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]),
                "w2": w[p + "mlp.down_proj.weight"],
                "bqkv": None,
            }
            if c.get("attention_bias", False):
                layer["bqkv"] = torch.cat([w[p + "self_attn.%s_proj.bias" % x] for x in "qkv"])
            self.layers.append(layer)
        del w
        self.inv_freq = llama3_inv_freq(c, "cuda")
        self.max_seq = max_seq
        shape = (max_batch, self.kv, max_seq, self.d)
        self.k_cache = [torch.zeros(shape, dtype=bf, device="cuda") for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=bf, device="cuda") for _ in self.layers]
        # Every tensor keeps its address, so a compiled step's CUDA graph
        # reads the weights and writes the cache in place instead of copying
        # them in at each replay (what an nn.Module's buffers get).
        for t in [self.embed, self.norm, self.head, self.inv_freq] + self.k_cache + self.v_cache:
            torch._dynamo.mark_static_address(t)
        for layer in self.layers:
            for t in layer.values():
                for part in (t if isinstance(t, tuple) else (t,)):
                    if part is not None:
                        torch._dynamo.mark_static_address(part)

    @staticmethod
    def linear(x, w, bias=None):
        """x · wᵀ (+ bias); an FP8 weight (codes, row scales) through
        torch._scaled_mm with the activations quantized per token (rows
        padded to 16, as _scaled_mm wants)."""
        import torch
        import torch.nn.functional as F

        if not isinstance(w, tuple):
            return F.linear(x, w, bias)
        codes, scales = w
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        m = x2.shape[0]
        if m % 16:
            x2 = F.pad(x2, (0, 0, 0, 16 - m % 16))
        x_scale = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        xq = (x2.float() / x_scale).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, codes.t(), scale_a=x_scale, scale_b=scales.reshape(1, -1),
                             out_dtype=torch.bfloat16)[:m]
        if bias is not None:
            y = y + bias
        return y.reshape(*shape[:-1], -1)

    def rms(self, x, weight):
        import torch

        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def rope(self, x, pos):
        import torch

        freqs = pos.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().to(x.dtype)[None, :, None, :], emb.sin().to(x.dtype)[None, :, None, :]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, ids, pos, last_only=False, row=0):
        """Logits (float) of ids [B, T] at positions pos [T] (the same for
        every row), writing their K/V into cache rows row .. row + B - 1;
        with last_only, of the last position only."""
        import torch
        import torch.nn.functional as F

        b, t = ids.shape
        x = self.embed[ids]
        mask = torch.arange(self.max_seq, device=ids.device)[None, :] <= pos[:, None]
        qn, kn = self.heads * self.d, self.kv * self.d
        for i, l in enumerate(self.layers):
            h = self.rms(x, l["in_norm"])
            qkv = self.linear(h, l["wqkv"], l["bqkv"])
            q = qkv[..., :qn].view(b, t, self.heads, self.d)
            k = qkv[..., qn:qn + kn].view(b, t, self.kv, self.d)
            v = qkv[..., qn + kn:].view(b, t, self.kv, self.d)
            q, k = self.rope(q, pos), self.rope(k, pos)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            kc, vc = self.k_cache[i][row:row + b], self.v_cache[i][row:row + b]
            kc.index_copy_(2, pos, k)
            vc.index_copy_(2, pos, v)
            y = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, enable_gqa=True)
            x = x + self.linear(y.transpose(1, 2).reshape(b, t, qn), l["wo"])
            h = self.rms(x, l["post_norm"])
            gu = self.linear(h, l["w13"])
            inter = gu.shape[-1] // 2
            x = x + self.linear(F.silu(gu[..., :inter]) * gu[..., inter:], l["w2"])
        if last_only:
            x = x[:, -1:]
        return F.linear(self.rms(x, self.norm), self.head).float()


def compare(ours, ref):
    """Top-1 agreement (over decisive positions and all) and NMSE of shift's
    logits `ours` against the reference's, both [positions][vocab]."""
    agree = ours.argmax(-1) == ref.argmax(-1)
    nmse = (((ours - ref) ** 2).sum() / (ref ** 2).sum()).item()
    # Where the reference's top two lie closer than 4x the RMS difference, a
    # different top-1 is a tie, not a fault (as transformers_reference.py).
    rms = ((ours - ref) ** 2).mean().sqrt().item()
    top2 = ref.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 4 * rms
    decisive_top1 = agree[decisive].double().mean().item() if decisive.any() else 1.0
    return decisive_top1, int(decisive.sum().item()), agree.double().mean().item(), nmse


def check(args):
    import torch

    longest = 0
    dumps = []
    for path in args.dumps:
        with open(path) as f:
            d = json.load(f)
        dumps.append((path, d))
        longest = max(longest, len(d["prompt_ids"]) + len(d["generated_ids"]))
    model = FastLlama(args.model, 1, longest, fp8=args.fp8)
    ok = True
    for path, d in dumps:
        prompt, generated = d["prompt_ids"], d["generated_ids"]
        ids = torch.tensor([prompt + generated[:-1]], device="cuda")
        with torch.no_grad():
            ref = model.forward(ids, torch.arange(ids.shape[1], device="cuda"))[0]
        ref = ref[len(prompt) - 1:].double().cpu()
        ours = torch.tensor(d["logits"], dtype=torch.float64)
        decisive_top1, decisive, top1, nmse = compare(ours, ref)
        # shift's tokens are its own greedy choices: they must be the top-1
        # of its logits.
        own = (ours.argmax(-1) == torch.tensor(generated)).all().item()
        passed = decisive_top1 >= BF16_MIN_TOP1 and nmse < BF16_MAX_NMSE and own
        ok &= passed
        print("check %s %s: %d positions teacher-forced; top-1 agreement %.4f over the %d "
              "decisive ones (bound %.2f), %.4f over all; logit NMSE %.3g (bound %.0e)%s" %
              ("PASS" if passed else "FAIL", os.path.basename(path), len(generated),
               decisive_top1, decisive, BF16_MIN_TOP1, top1, nmse, BF16_MAX_NMSE,
               "" if own else "; shift's tokens are not its logits' top-1"))
        sys.stdout.flush()
    return 0 if ok else 1


def fast_against_transformers(model_dir, fast):
    """FastLlama's logits against transformers' on one 64-token prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda").eval()
    ids = torch.randint(3, 2000, (1, 64), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        ref = hf(ids).logits[0].double().cpu()
        ours = fast.forward(ids, torch.arange(64, device="cuda"))[0].double().cpu()
    del hf
    torch.cuda.empty_cache()
    decisive_top1, decisive, top1, nmse = compare(ours, ref)
    print("fast-llama vs transformers: top-1 %.4f over %d decisive positions, %.4f over all; "
          "logit NMSE %.3g" % (decisive_top1, decisive, top1, nmse))
    return decisive_top1 >= BF16_MIN_TOP1 and nmse < BF16_MAX_NMSE


def fast_decode(args):
    import torch

    batches = [int(b) for b in args.batch.split(",")]
    total = args.context + args.steps + 8
    model = FastLlama(args.model, max(batches), total, fp8=args.fp8)
    ok = args.fp8 or fast_against_transformers(args.model, model)

    def step(ids, pos):
        logits = model.forward(ids, pos)
        return logits[:, -1].argmax(-1, keepdim=True)

    # One static graph per batch size, as gpt-fast compiles.
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch._dynamo.config.cache_size_limit = 64
    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    vocab = min(model.c["vocab_size"], 2000)
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(3, vocab, (batch, args.context), generator=g).cuda()
        with torch.no_grad():
            for row in range(0, batch, 8):  # prefill 8 rows at a time: bounded memory
                model.forward(ids[row:row + 8], torch.arange(args.context, device="cuda"),
                              last_only=True, row=row)
            token = ids[:, -1:]
            times = []
            for i in range(args.steps + 3):
                pos = torch.tensor([args.context + i], device="cuda")
                torch.cuda.synchronize()
                t = time.perf_counter()
                token = compiled(token, pos).clone()
                torch.cuda.synchronize()
                if i >= 3:  # compilation and graph capture first
                    times.append(time.perf_counter() - t)
        print("torch-compile%s decode batch=%d context=%d steps=%d median_ms=%.3f min_ms=%.3f" %
              (" fp8" if args.fp8 else "", batch, args.context, len(times),
               median(times) * 1e3, min(times) * 1e3))
        sys.stdout.flush()
    return 0 if ok else 1


def fast_prefill(args):
    import torch

    sizes = [int(n) for n in args.tokens.split(",")]
    model = FastLlama(args.model, 1, max(sizes), fp8=args.fp8)
    vocab = min(model.c["vocab_size"], 2000)
    for n in sizes:
        ids = torch.randint(3, vocab, (1, n), generator=torch.Generator().manual_seed(n)).cuda()
        pos = torch.arange(n, device="cuda")
        times = []
        with torch.no_grad():
            for i in range(4):
                torch.cuda.synchronize()
                t = time.perf_counter()
                model.forward(ids, pos, last_only=True)
                torch.cuda.synchronize()
                if i >= 1:
                    times.append(time.perf_counter() - t)
        print("torch-eager%s prefill tokens=%d median_ms=%.2f" %
              (" fp8" if args.fp8 else "", n, median(times) * 1e3))
        sys.stdout.flush()
    return 0


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
    fp8_help = "an FP8 checkpoint's projections through torch._scaled_mm (else dequantized)"
    f = sub.add_parser("fast-decode")
    f.add_argument("model")
    f.add_argument("--batch", default="1")
    f.add_argument("--context", type=int, default=1024)
    f.add_argument("--steps", type=int, default=32)
    f.add_argument("--fp8", action="store_true", help=fp8_help)
    f = sub.add_parser("fast-prefill")
    f.add_argument("model")
    f.add_argument("--tokens", default="512,2048,8192")
    f.add_argument("--fp8", action="store_true", help=fp8_help)
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("dumps", nargs="+")
    c.add_argument("--fp8", action="store_true", help=fp8_help)
    args = p.parse_args()
    commands = {"ceilings": ceilings, "weights": weights, "hf-decode": hf_decode,
                "fast-decode": fast_decode, "fast-prefill": fast_prefill, "check": check}
    sys.exit(commands[args.cmd](args) or 0)


if __name__ == "__main__":
    main()
