"""One deep model on several devices: torch.distributed DistributedDataParallel (``train.deep.ddp``).

The task that trains the model is rank 0: it leases its device, prepares the clips, starts the
other ranks as processes (:func:`start_ranks`, one per further device: ``train.deep.devices`` or
every visible GPU; ``train.deep.ddp_processes`` on a CPU) and trains with them. Every rank
builds the same model, wraps it in :class:`~torch.nn.parallel.DistributedDataParallel` (NCCL on
CUDA, gloo on the CPU; BatchNorm synchronised on CUDA) and reads its own share of the clips
(:class:`ShardSampler`); the gradients are averaged at every step, so a step of ``world`` ranks
at batch ``b`` is the step of one process at batch ``world * b`` on the same clips. Evaluation
splits the clips by rank and sums the video logits across ranks, so every rank takes the same
early-stopping decisions. Rank 0 alone writes the checkpoints, the resume cache, the failures
and (through its caller) MLflow: a DDP model is one MLflow run, with the result a single device
gives.

Started by a launcher instead (``train.deep.launcher``: ``torchrun`` or SLURM's ``srun``; the
variables are read by :func:`fvcflow.config.launch_env`), every process of ``fvc train`` joins
the launcher's group at start (:func:`join_launched`, ``cuda:LOCAL_RANK`` on CUDA). Rank 0 runs
the training as usual and, for each deep model, sends the other ranks what to train
(:func:`send`, over a gloo group that waits as long as rank 0's other work takes); they train it
with rank 0 (:func:`receive`) until it sends ``None``. The launcher stops every rank when one dies.

A rank that dies ends the run: the collectives of the others fail (gloo at once, NCCL within
``train.deep.ddp_timeout``) and rank 0 raises one :class:`~fvcflow.errors.DeviceError` naming
the rank and how it ended; the ranks it started are stopped.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from fvcflow.errors import ConfigError, DeviceError

log = logging.getLogger("fvcflow.deep")


@dataclass(frozen=True)
class Rank:
    """This process's place in a DDP model: ``rank`` of ``world``, on ``device``."""

    rank: int
    world: int
    device: Any

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes (checkpoints, resume cache, MLflow)."""
        return self.rank == 0


def backend_for(device) -> str:
    """``nccl`` on CUDA, ``gloo`` on the CPU.

    >>> backend_for(torch.device("cpu")), backend_for(torch.device("cuda", 1))
    ('gloo', 'nccl')
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def world_devices(setting: str, devices: Sequence[int] | None, processes: int | None,
                  count: int) -> list[int]:
    """The device index of each rank: ``devices`` (default every visible GPU) on CUDA, else
    ``processes`` CPU ranks (default 2). Fewer than 2 is an error: DDP needs two ranks.

    >>> world_devices("cpu", None, None, 0), world_devices("auto", None, None, 4)
    ([0, 1], [0, 1, 2, 3])
    >>> world_devices("cuda", [3, 1], None, 4)
    [3, 1]
    """
    cuda = setting != "cpu" and count > 0
    if cuda:
        out = list(range(count)) if devices is None else [int(d) for d in devices]
        if processes is not None:
            out = out[:processes]
    else:
        out = list(range(processes if processes is not None else 2))
    if len(out) < 2:
        raise ConfigError(f"setting 'train.deep.ddp': DDP needs at least 2 ranks, got {len(out)} "
                          f"({'GPUs ' + str(out) if cuda else 'CPU processes (train.deep.ddp_processes)'}): "
                          "turn train.deep.ddp off to train on one device")
    return out


def free_port() -> int:
    """A free TCP port of the loopback interface (the rendezvous of locally started ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def join(rank: int, world: int, device, address: str, timeout: float) -> Rank:
    """Join the process group at ``address`` (``tcp://host:port``) as ``rank`` of ``world``; on
    CUDA the device becomes this process's current one first."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=address, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout))
    return Rank(rank, world, device)


def leave() -> None:
    """Destroy this process's process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- a group a launcher started (torchrun, srun) -------------------------------------------------
#: this process's rank of a launcher's group (None: not launched), the gloo group the jobs go
#: over, and the lock that keeps one model at a time on the group (deep tasks may run in threads)
_launched: Rank | None = None
_jobs = None
_launched_lock = threading.Lock()
#: how long a rank waits for rank 0's next model (rank 0 may train CPU models in between)
JOB_WAIT = timedelta(days=7)


def join_launched(env, timeout: float, *, cuda: bool) -> Rank:
    """Join the group of a launcher (``env``: a :class:`fvcflow.config.LaunchEnv`) as its
    ``rank`` of ``world``, on ``cuda:local_rank`` (CUDA) or the CPU (gloo)."""
    global _launched, _jobs
    device = torch.device("cuda", env.local_rank) if cuda else torch.device("cpu")
    if cuda and env.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"{env.launcher}: local rank {env.local_rank} has no GPU (this node's process sees "
                          f"{torch.cuda.device_count()}): start at most one process per GPU")
    ctx = join(env.rank, env.world, device, env.address, timeout)
    _jobs = dist.new_group(backend="gloo", timeout=JOB_WAIT)
    _launched = ctx
    return ctx


def launched() -> Rank | None:
    """This process's place in a launcher's group, or None (not started by a launcher)."""
    return _launched


def launched_model():
    """Held by rank 0 while one model trains on the launcher's group (one at a time)."""
    return _launched_lock


def send(job) -> None:
    """Rank 0: hand ``job`` (None: nothing more) to every other rank of the launcher's group."""
    dist.broadcast_object_list([job], src=0, group=_jobs)


def receive():
    """Ranks 1 ..: the next job rank 0 sends (None: the training is over)."""
    box = [None]
    dist.broadcast_object_list(box, src=0, group=_jobs)
    return box[0]


def leave_launched() -> None:
    """Leave the launcher's group (end of ``fvc train``)."""
    global _launched, _jobs
    _launched = _jobs = None
    leave()


def gather(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank (the ranks' random states)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# -- which clips each rank reads ----------------------------------------------------------------
class ShardSampler(Sampler):
    """The indices of :class:`~fvcflow.deep.data.EpochSampler` (``epoch * n + i``, the same
    per-epoch order) that ``rank`` of ``world`` reads, disjoint from every other rank's.

    Training (``shuffle``): the epoch's order loses its last ``n % world`` items (others each
    epoch), is cut into global batches of ``world * batch_size`` and each rank takes its own
    contiguous share of every global batch: all ranks take the same number of steps of equal
    size, and their union at each step is one process's batch of ``world * batch_size``.
    Evaluation: each rank takes one contiguous share of every item (sizes may differ by one).

    >>> [list(ShardSampler(10, rank=r, world=2, batch_size=2, shuffle=False)) for r in (0, 1)]
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    >>> s = [ShardSampler(10, rank=r, world=2, batch_size=2, shuffle=True, seed=1) for r in (0, 1)]
    >>> len(s[0]) == len(s[1]) == 5 and not set(s[0]) & set(s[1])
    True
    """

    def __init__(self, n: int, *, rank: int, world: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.n, self.rank, self.world, self.batch_size = n, rank, world, batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _mine(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.tensor_split(torch.arange(self.n), self.world)[self.rank]
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order[: self.n - self.n % self.world]
        size = self.world * self.batch_size
        return torch.cat([torch.tensor_split(order[s:s + size], self.world)[self.rank]
                          for s in range(0, len(order), size)] or [order])

    def __len__(self) -> int:
        return len(self._mine())

    def __iter__(self):
        return iter((self._mine() + self.epoch * self.n).tolist())


# -- collectives the loop needs -----------------------------------------------------------------
def all_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over every rank, in place (one collective per tensor)."""
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_true(flag: torch.Tensor) -> bool:
    """Whether ``flag`` (a bool tensor) holds on every rank: the same answer everywhere."""
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value)


def wrap(model: torch.nn.Module, ctx: Rank) -> torch.nn.Module:
    """``model`` as a DDP module on ``ctx.device`` (BatchNorm synchronised across ranks on CUDA;
    gloo has no SyncBatchNorm, so on the CPU each rank normalises its own share)."""
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(model)


# -- starting the other ranks -------------------------------------------------------------------
@dataclass
class Ranks:
    """The ranks rank 0 started: their processes and the files they write a failure to."""

    processes: list
    folder: Path
    stopped: set = field(default_factory=set)       # ranks rank 0 had to kill (not failures)

    def failure(self) -> str | None:
        """One line: the first rank that failed or died, and how; None while all are well."""
        for i, p in enumerate(self.processes, start=1):
            if i in self.stopped:
                continue
            note = self.folder / f"rank{i}.error"
            if note.exists() and note.read_text().strip():
                return f"rank {i} failed: {note.read_text().strip()}"
            if p.exitcode is not None and p.exitcode != 0:
                how = f"killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
                return f"rank {i} died ({how})"
        return None

    def wait_started(self, timeout: float, poll: float = 0.1) -> None:
        """Wait until every rank is joining the group (it has started torch and the library): a
        rank that fails or dies before is named at once (one line, :class:`DeviceError`) instead
        of leaving rank 0 waiting for the group's timeout."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            dead = self.failure()
            if dead is not None:
                self.stop()
                raise DeviceError(f"DDP could not start: {dead}")
            if all((self.folder / f"rank{i}.joining").exists() for i in range(1, len(self.processes) + 1)):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DeviceError(f"DDP could not start: not every rank began within {timeout:.0f} s "
                                  "(train.deep.ddp_timeout)")
            time.sleep(poll)

    def stop(self) -> None:
        """Stop the ranks that still run (rank 0 failed or finished) and wait for them."""
        for i, p in enumerate(self.processes, start=1):
            p.join(timeout=30 if p.exitcode is None else 0)
            if p.is_alive():
                self.stopped.add(i)
                p.kill()
                p.join()


def _rank_main(fn: Callable, rank: int, world: int, device, address: str, timeout: float, folder: str,
               args: tuple) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    try:
        Path(folder, f"rank{rank}.joining").touch()
        ctx = join(rank, world, device, address, timeout)
        try:
            fn(ctx, *args)
        finally:
            leave()
    except BaseException as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        Path(folder, f"rank{rank}.error").write_text(f"{type(exc).__name__}: {text}\n")
        raise SystemExit(1) from None


def start_ranks(fn: Callable, devices: Sequence, address: str, timeout: float, args: tuple) -> Ranks:
    """Start ranks ``1 .. len(devices) - 1`` as spawned processes, rank ``r`` on ``devices[r]``,
    each joining the group at ``address`` and calling ``fn(Rank, *args)`` (a module-level
    function). Rank 0 (the caller) joins with :func:`join` itself."""
    folder = Path(tempfile.mkdtemp(prefix="fvc-ddp-"))
    ctx = torch.multiprocessing.get_context("spawn")
    procs = []
    for r in range(1, len(devices)):
        p = ctx.Process(target=_rank_main, args=(fn, r, len(devices), devices[r], address, timeout,
                                                 str(folder), args))
        p.start()
        procs.append(p)
    return Ranks(procs, folder)
