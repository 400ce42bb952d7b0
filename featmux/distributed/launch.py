"""Process groups: join the one `torchrun` describes, or start N local processes (tests, benchmarks).

torchrun --nproc-per-node 2 -m featmux.cli.main train --distributed ...   # each process joins via env
launch_local(worker, world_size=2, args=(...,))                          # same, without torchrun
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, unique
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@unique
class Backend(Enum):
    """Collective backend: AUTO follows the training device (cuda: nccl, cpu: gloo), never a GPU that
    merely happens to be visible."""

    AUTO = "auto"
    GLOO = "gloo"
    NCCL = "nccl"


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Args:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this host (picks the GPU).
        device: the device this rank computes on.
        backend: the collective backend in use.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Backend

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_backend(backend: Backend | str = Backend.AUTO, device: str = "cpu") -> Backend:
    """The backend to run for a training `device`, or a ValueError saying why that pair cannot run.

    Args:
        backend: AUTO, GLOO or NCCL.
        device: "cpu" or "cuda" (`TrainConfig.device`).

    Example:
        >>> resolve_backend("auto", "cpu")
        <Backend.GLOO: 'gloo'>
    """
    backend = Backend(backend)
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: distributed training runs on cpu (gloo) or cuda (nccl)")
    if backend is Backend.AUTO:
        backend = Backend.NCCL if kind == "cuda" else Backend.GLOO
    if backend is Backend.NCCL and kind != "cuda":
        raise ValueError("backend nccl needs --device cuda (and CUDA); use gloo on CPU")
    if backend is Backend.GLOO and kind == "cuda":
        raise ValueError("--device cuda needs the nccl backend (TorchRec's GPU path); use --backend nccl")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda: no CUDA GPU is visible to torch here; use --device cpu")
        import fbgemm_gpu

        variant = getattr(fbgemm_gpu, "__variant__", "unknown")
        if variant == "cpu":
            raise ValueError(
                "device cuda needs the CUDA build of fbgemm-gpu; this environment has fbgemm-gpu-cpu "
                "(TorchRec's CPU path): use --device cpu, or install fbgemm-gpu for your CUDA version"
            )
    return backend


def init_distributed(backend: Backend | str = Backend.AUTO, device: str = "cpu") -> DistEnv:
    """Join (or reuse) the default process group described by torchrun's environment variables.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them (a plain `python`
    run) it starts a group of one on 127.0.0.1, so the same code path runs single-process.

    Args:
        backend: AUTO, GLOO or NCCL (see `resolve_backend`).
        device: the training device, "cpu" or "cuda".

    Example:
        >>> env = init_distributed()  # inside a torchrun worker
        >>> env.rank, env.world_size
    """
    backend = resolve_backend(backend, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is Backend.NCCL:
        device_ = torch.device("cuda", local_rank)
        torch.cuda.set_device(device_)
    else:
        device_ = torch.device("cpu")
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        dist.init_process_group(backend.value)
    else:
        used = dist.get_backend()
        if used != backend.value:
            raise RuntimeError(f"the process group already runs {used}, not {backend.value}")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device_, backend)


def current_env() -> DistEnv:
    """The `DistEnv` of an initialized default process group (see `init_distributed`)."""
    if not dist.is_initialized():
        raise RuntimeError("no process group: call featmux.distributed.init_distributed() first")
    backend = Backend(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if backend is Backend.NCCL else torch.device("cpu")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def free_port() -> int:
    """A TCP port that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    fn: Callable[..., Any],
    args: Sequence[Any],
    world_size: int,
    port: int,
    threads: int,
    results: Any,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(threads)
    try:
        init_distributed(Backend.GLOO)
        out = fn(*args)
        # plain pickle: tensors travel by value, not as shared-memory handles that die with this process
        results.put((rank, True, pickle.dumps(out)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _context(fn: Callable[..., Any]) -> Any:
    """A forkserver context that imports torch/TorchRec once: each launch then forks in milliseconds
    instead of re-importing (about 7 s per process); spawn where forkserver does not exist."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    where = getattr(fn, "__module__", "__main__")
    modules = ["__main__" if where in ("__main__", "__mp_main__") else where, "featmux.distributed"]
    ctx.set_forkserver_preload(modules)  # takes effect when the server starts (first launch)
    return ctx


def launch_local(
    fn: Callable[..., Any],
    world_size: int,
    args: Sequence[Any] = (),
    threads_per_rank: int = 1,
    timeout_s: float | None = None,
) -> list[Any]:
    """Run `fn(*args)` in `world_size` fresh processes joined in a gloo group; return each rank's result.

    `fn` must be importable (a module-level function) and its arguments and result picklable.

    Args:
        fn: the worker; it finds its rank with `torch.distributed.get_rank()`.
        world_size: processes to start.
        args: arguments passed to every rank.
        threads_per_rank: torch intra-op threads in each process.
        timeout_s: kill the processes and raise if they have not all finished by then.

    Example:
        >>> losses = launch_local(train_worker, world_size=2, args=(config,))
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = _context(fn)
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, fn, tuple(args), world_size, port, threads_per_rank, results))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    errors: list[str] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while len(out) < world_size and not errors:
        try:
            rank, ok, value = results.get(timeout=0.5)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0) and i not in out]
            if dead:
                errors.append(f"rank(s) {dead} died with exit code(s) {[procs[i].exitcode for i in dead]}")
            elif deadline is not None and time.monotonic() > deadline:
                errors.append(f"timed out after {timeout_s} s")
            continue
        if ok:
            out[rank] = pickle.loads(value)
        else:  # the other ranks may now wait forever on a collective: stop them
            errors.append(f"rank {rank}:\n{value}")
    if errors:
        for p in procs:
            if p.is_alive():
                p.kill()
    for p in procs:
        p.join()
    if errors:
        raise RuntimeError("distributed worker failed\n" + "\n".join(errors))
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"distributed workers exited with codes {bad}")
    return [out[r] for r in range(world_size)]
