"""bench/worker/torch_gpt.py: the peer atom-bench-worker is compared with: the same GPT-2 model
(docs/model.md: gpt-tiny, B=8 per rank, T=128) trained with PyTorch's
AdamW under DistributedDataParallel on gloo, on the same bytes, measured the same way (steps
after a warm-up, tokens of all ranks per second).

    python3 torch_gpt.py --ranks R --threads N [--steps 10 --warmup 3] [--bf16]

Prints "tokens_per_s X", "ms_per_step Y" and "cpu_ms_per_step Z" (rank 0; Z is its main
thread's CPU time, which leaves out waits for a core, as atom-bench-worker's). Written for Debian's PyTorch 1.13: no
scaled_dot_product_attention, and gloo refuses bool buffers, so the causal mask is a float one.
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

V, VP, T, C, L, NH, B = 256, 256, 128, 256, 4, 4, 8


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)
        mask = torch.full((T, T), float("-inf")).triu(1)
        self.register_buffer("mask", mask)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(b, t, NH, C // NH).transpose(1, 2)
        k = k.view(b, t, NH, C // NH).transpose(1, 2)
        v = v.view(b, t, NH, C // NH).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH) + self.mask[:t, :t]
        a = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, C)
        x = x + self.attproj(a)
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VP, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.lnf = nn.LayerNorm(C)
        for name, prm in self.named_parameters():  # the reference initialisation
            if name.endswith("bias"):
                nn.init.zeros_(prm)
            elif prm.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if "proj" in name else 0.02
                nn.init.normal_(prm, 0.0, std)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        logits = self.lnf(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))


def worker(rank, args, port):
    torch.set_num_threads(args.threads)
    if args.ranks > 1:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank,
                                world_size=args.ranks)
    torch.manual_seed(1234)
    model = GPT()
    if args.ranks > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    data = torch.frombuffer(bytearray(open(args.data, "rb").read()), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(rank)
    times, cpu = [], []
    for step in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        off = torch.randint(0, len(data) - T - 1, (B,), generator=gen)
        batch = torch.stack([data[o:o + T + 1] for o in off.tolist()])
        # --bf16: PyTorch's autocast, what atom's training.precision: bf16 is (fp32 master
        # weights and optimizer; matmul operands in bf16 with fp32 accumulation)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if args.ranks > 1:
            dist.barrier()  # every rank's step done, as atom's per-step all-reduce
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    if rank == 0:
        measured = sum(times[args.warmup:])
        print("tokens_per_s %.0f" % (args.ranks * B * T * args.steps / measured))
        print("ms_per_step %.1f" % (1000 * measured / args.steps))
        print("cpu_ms_per_step %.1f (rank 0's main thread)" % (1000 * sum(cpu[args.warmup:]) / args.steps))
        print("loss %.4f" % loss.item())
    if args.ranks > 1:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--data", default="/usr/share/common-licenses/GPL-3")
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()
    port = 29500 + os.getpid() % 2000
    if args.ranks == 1:
        worker(0, args, port)
    else:
        mp.spawn(worker, args=(args, port), nprocs=args.ranks)


if __name__ == "__main__":
    main()
