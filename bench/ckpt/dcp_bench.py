#!/usr/bin/env python3
"""bench/ckpt/dcp_bench.py: PyTorch's distributed checkpoint (DCP) saving and loading the same
gpt2-124m-sized state as bench_ckpt (124.5M parameters + two AdamW moments, 1.494 GB), the
peer that issue 5 compares atom's checkpoints with.

    mpirun -np N python3 dcp_bench.py --dir DIR [--model gpt2-124m|gpt-tiny]

Launched by mpirun (rank and size from Open MPI's environment; gloo process group over TCP on
this host). As in bench_ckpt (TP = ranks), each rank holds 1/N of every tensor (its rows along
the first dimension) as the local shard of a ShardedTensor of the global shape, so each rank
saves and loads 1/N of the state. DCP's
FileSystemWriter writes one file per rank and fsyncs it (sync_files, its default). Before the
load every file is evicted from the page cache (fdatasync + POSIX_FADV_DONTNEED), as bench_ckpt
does before atom's loads. Prints "key value" lines like bench_ckpt; exits 3 when torch or its
checkpoint module cannot be imported (run_bench.sh then says it skipped DCP).

Here torch is Debian's 1.13 on Python 3.11, where DCP lives in torch.distributed._shard.checkpoint
(torch.distributed.checkpoint from 2.0 on) and fails to import under Python 3.11's dataclass
check (a dataclass default that is itself an unhashable dataclass, fixed in torch 2.0); the shim
below makes those classes hashable while the module imports. It changes no behaviour of DCP.
"""
import argparse
import dataclasses
import os
import sys
import time


def import_dcp():
    try:
        import torch
        import torch.distributed as dist
    except ImportError as e:
        print(f"dcp_skipped torch not importable: {e}", flush=True)
        sys.exit(3)
    try:
        import torch.distributed.checkpoint as dcp  # torch >= 2.0
        return torch, dist, dcp
    except ImportError:
        pass
    original = dataclasses.dataclass

    def hashable_dataclass(cls=None, /, **kw):
        def wrap(c):
            out = original(**kw)(c)
            if out.__hash__ is None:
                out.__hash__ = object.__hash__
            return out
        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = hashable_dataclass
    try:
        import torch.distributed._shard.checkpoint as dcp  # torch 1.13
    except Exception as e:  # noqa: BLE001 - any import failure means: no DCP here
        print(f"dcp_skipped torch {torch.__version__} has no usable distributed checkpoint: {e}",
              flush=True)
        sys.exit(3)
    finally:
        dataclasses.dataclass = original
    return torch, dist, dcp


SHAPES = {"gpt2-124m": (12, 768, 50304, 1024), "gpt-tiny": (4, 256, 256, 128)}  # L, C, Vp, T


def tensor_shapes(L, C, Vp, T):
    """The 16 tensors of docs/checkpoint-format.md, as in tests/checkpoints/ckpt_test_model.c."""
    return {
        "wte": (Vp, C), "wpe": (T, C), "ln1w": (L, C), "ln1b": (L, C), "qkvw": (L, 3 * C, C),
        "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C), "ln2w": (L, C),
        "ln2b": (L, C), "fcw": (L, 4 * C, C), "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C),
        "fcprojb": (L, C), "lnfw": (C,), "lnfb": (C,),
    }


def my_rows(n, rank, size):
    """Rank's share of n rows: near-equal consecutive ranges, as numpy.array_split."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, base + (1 if rank < extra else 0)


def build_state(torch, shapes, rank, size, fill):
    """Each tensor as a ShardedTensor of its global shape whose local shard is this rank's rows
    (plain tensors are treated as replicated by DCP: only rank 0 would write them)."""
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, init_from_local_shards
    state, elems = {}, 0
    for kind in ("param", "adam_m", "adam_v"):
        for name, shape in shapes.items():
            start, rows = my_rows(shape[0], rank, size)
            local = (rows,) + tuple(shape[1:])
            if fill:  # a cheap non-zero pattern (the virtual disk writes zeros faster)
                t = torch.arange(0, int(torch.Size(local).numel()), dtype=torch.float32)
                t = t.remainder_(1000).mul_(1e-3).reshape(local)
            else:
                t = torch.empty(local, dtype=torch.float32)
            md = ShardMetadata(shard_offsets=[start] + [0] * (len(shape) - 1),
                               shard_sizes=list(local), placement=f"rank:{rank}/cpu")
            state[f"{kind}/{name}"] = init_from_local_shards([Shard(t, md)], list(shape))
            elems += t.numel()
    return state, elems


def local(st):
    return st.local_shards()[0].tensor


def evict(folder):
    for entry in os.scandir(folder):
        if entry.is_file():
            fd = os.open(entry.path, os.O_RDONLY)
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(SHAPES))
    args = ap.parse_args()
    torch, dist, dcp = import_dcp()
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getppid() % 1000))
    torch.set_num_threads(1)  # one core per rank, as atom's ranks
    dist.init_process_group("gloo", rank=rank, world_size=size)
    shapes = tensor_shapes(*SHAPES[args.model])
    state, elems = build_state(torch, shapes, rank, size, fill=True)
    total = torch.tensor([elems], dtype=torch.int64)
    dist.all_reduce(total)
    gb = int(total.item()) * 4 / 1e9
    if rank == 0:
        print(f"dcp torch {torch.__version__} model {args.model} state_gb {gb:.3f} ranks {size}",
              flush=True)

    dist.barrier()
    t0 = time.perf_counter()
    dcp.save_state_dict(state, dcp.FileSystemWriter(args.dir))
    dist.barrier()
    save_s = time.perf_counter() - t0

    if rank == 0:
        evict(args.dir)
    fresh, _ = build_state(torch, shapes, rank, size, fill=False)
    dist.barrier()
    t0 = time.perf_counter()
    dcp.load_state_dict(fresh, dcp.FileSystemReader(args.dir))
    dist.barrier()
    load_s = time.perf_counter() - t0
    same = all(torch.equal(local(state[k]), local(fresh[k])) for k in state)
    ok = torch.tensor([1 if same else 0])
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(f"dcp_save_s {save_s:.3f} dcp_save_GBps {gb / save_s:.3f}", flush=True)
        print(f"dcp_load_s {load_s:.3f} dcp_load_GBps {gb / load_s:.3f} load_equal {int(ok.item())}",
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
