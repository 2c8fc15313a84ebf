"""bench/sample/torch_gpt2_sample.py: the peer of `atomctl sample` in bench/sample/run.sh: a
minimal GPT-2 in PyTorch (the model atom trains, docs/checkpoint-format.md's export names) with
a key/value cache (past keys and values per layer), loading the safetensors file that `atomctl
ckpt export` writes, and generating greedily on one thread, timed as atom-infer times itself:
the prompt's forward (prefill) apart, then tokens/s over the tokens after the first.

    python3 torch_gpt2_sample.py MODEL.safetensors --prompt-ids 1,2,3 --tokens N --heads NH

Prints one JSON object: ids, prefill_s, decode_s, tokens_per_s. Written for Debian's PyTorch
1.13 (no scaled_dot_product_attention)."""
import argparse
import json
import math
import struct
import time

import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, d in header.items():
        if name == "__metadata__":
            continue
        assert d["dtype"] == "F32", d
        b, e = d["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[base + b:base + e]),
                                     dtype=torch.float32).reshape(d["shape"])
    return out


class GPT2:
    def __init__(self, w, heads):
        self.w, self.nh = w, heads
        self.L = sum(1 for k in w if k.endswith(".ln_1.weight"))
        self.C = w["transformer.wte.weight"].shape[1]

    def ln(self, x, name):
        return F.layer_norm(x, (self.C,), self.w[name + ".weight"], self.w[name + ".bias"], 1e-5)

    def lin(self, x, name):  # Conv1D: weight (in, out)
        return torch.addmm(self.w[name + ".bias"], x, self.w[name + ".weight"])

    def forward(self, ids, cache):
        """ids: the new positions; cache: per layer (K, V) of the earlier ones, extended here.
        Returns the last position's logits."""
        w, C, nh = self.w, self.C, self.nh
        hs = C // nh
        p0 = cache[0][0].shape[1] if cache[0] is not None else 0
        n = len(ids)
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][p0:p0 + n]
        for l in range(self.L):
            h = "transformer.h.%d" % l
            q, k, v = self.lin(self.ln(x, h + ".ln_1"), h + ".attn.c_attn").split(C, dim=1)
            q = q.view(n, nh, hs).transpose(0, 1)
            k = k.view(n, nh, hs).transpose(0, 1)
            v = v.view(n, nh, hs).transpose(0, 1)
            if cache[l] is not None:
                k = torch.cat([cache[l][0], k], dim=1)
                v = torch.cat([cache[l][1], v], dim=1)
            cache[l] = (k, v)
            att = (q @ k.transpose(1, 2)) / math.sqrt(hs)
            if n > 1:  # the prompt: each query sees the keys up to its own position
                mask = torch.full((n, p0 + n), float("-inf")).triu(p0 + 1)
                att = att + mask
            a = (att.softmax(dim=-1) @ v).transpose(0, 1).reshape(n, C)
            x = x + self.lin(a, h + ".attn.c_proj")
            m = F.gelu(self.lin(self.ln(x, h + ".ln_2"), h + ".mlp.c_fc"), approximate="tanh")
            x = x + self.lin(m, h + ".mlp.c_proj")
        last = self.ln(x[-1:], "transformer.ln_f")
        return (last @ w["transformer.wte.weight"].t())[0]  # tied head, real vocabulary


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--prompt-ids", required=True)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--heads", type=int, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = GPT2(load_safetensors(args.model), args.heads)
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    out = []
    with torch.no_grad():
        cache = [None] * model.L
        t0 = time.perf_counter()
        logits = model.forward(torch.tensor(prompt), cache)
        t1 = time.perf_counter()
        for i in range(args.tokens):
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            if i == args.tokens - 1:
                break
            logits = model.forward(torch.tensor([nxt]), cache)
        t2 = time.perf_counter()
    print(json.dumps({"ids": out, "prefill_s": t1 - t0, "decode_s": t2 - t1,
                      "tokens_per_s": (args.tokens - 1) / (t2 - t1)}))


if __name__ == "__main__":
    main()
