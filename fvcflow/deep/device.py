"""Which device trains: the ``train.deep.device`` setting (auto, cuda, cpu), the lease of one
device per deep task, and what it reports.

A deep model's task holds one :func:`lease_device` for its lifetime: the first free index of the
candidates (``train.deep.devices``, else every GPU torch sees, which honours
``CUDA_VISIBLE_DEVICES``), taken with an exclusive ``flock`` on a file named by the card's UUID,
in :func:`lock_dir`, so two tasks of
one run, two runs or two worker processes of one machine never share a card. The lock is given
back when the task ends, on success, failure, or when the process dies (the kernel drops it). On a
CPU-only machine there is nothing to lease and nothing changes; candidates given explicitly with
``device = "cpu"`` are leased as slots (the scheduling can be checked on a CPU).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from fvcflow.errors import ConfigError

#: how long a lease waits for a free device before it names who holds them (seconds)
LEASE_TIMEOUT = 24 * 3600.0


def gpu_count() -> int:
    """CUDA devices this process sees (0 without torch's CUDA or a GPU)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(setting: str = "auto"):
    """``torch.device`` for the setting: ``auto`` takes CUDA when present; ``cuda`` without one is an error.

    >>> choose_device("cpu").type
    'cpu'
    """
    import torch

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if setting in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("setting 'train.deep.device' is 'cuda' but torch sees no CUDA device")
        return torch.device("cuda")
    raise ConfigError(f"setting 'train.deep.device': must be auto, cuda or cpu (got {setting!r})")


@dataclass(frozen=True)
class Lease:
    """A leased device: ``index`` among the candidates (None: nothing leased), the torch device."""

    index: int | None
    device: Any

    def tags(self) -> dict[str, str]:
        return {} if self.index is None else {"fvc.device_index": str(self.index)}


def lock_dir() -> Path:
    """The machine-wide folder of the device locks (one per user, in the temp dir)."""
    return Path(tempfile.gettempdir()) / f"fvcflow-devices-{os.getuid()}"


def _physical(index: int, cuda: bool) -> str:
    """The machine-wide name of visible device ``index``: the card's UUID, so processes that see
    the cards in another order (``CUDA_VISIBLE_DEVICES``) lock the same file.

    >>> _physical(1, cuda=False)
    'slot-1'
    """
    if not cuda:
        return f"slot-{index}"
    import torch

    return f"cuda-{torch.cuda.get_device_properties(index).uuid}"


def candidates(devices: Sequence[int] | None, count: int, *, cuda: bool) -> list[int]:
    """The device indices a lease may take: ``devices`` (checked against the ``count`` visible
    ones on CUDA) or ``range(count)``.

    >>> candidates(None, 3, cuda=True), candidates([2, 0], 4, cuda=True)
    ([0, 1, 2], [2, 0])
    """
    if devices is None:
        return list(range(count))
    out = [int(d) for d in devices]
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise ConfigError(f"setting 'train.deep.devices': distinct indices >= 0 expected "
                          f"(got {list(devices)})")
    if cuda and max(out) >= count:
        raise ConfigError(f"setting 'train.deep.devices': {list(devices)} names a device torch does not see "
                          f"({count} visible, numbered from 0 after CUDA_VISIBLE_DEVICES)")
    return out


_local = threading.Lock()


def _try_lock(path: Path):
    fh = open(path, "a+")           # noqa: SIM115 - held open for the lease's lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()} {threading.get_ident()}\n")
    fh.flush()
    return fh


@contextlib.contextmanager
def lease_device(setting: str = "auto", devices: Sequence[int] | None = None, *, count: int | None = None,
                 root: Path | None = None, timeout: float = LEASE_TIMEOUT,
                 poll: float = 0.2) -> Iterator[Lease]:
    """Hold one device for the ``with`` block: ``cuda:i`` for the first free candidate ``i``.

    ``count`` is the number of visible devices (default :func:`gpu_count`). Without candidates
    (a CPU-only machine, ``device = "cpu"`` without ``devices``) nothing is leased. On CUDA the
    device becomes the thread's current one, its peak statistics are reset at the start and, at
    the end, garbage is collected and the cache emptied, so the next model starts clean and
    reports its own peak.

    >>> root = Path(tempfile.mkdtemp())
    >>> with lease_device("cpu", [0, 1], root=root) as a, lease_device("cpu", [0, 1], root=root) as b:
    ...     (a.index, b.index)
    (0, 1)
    """
    import torch

    base = choose_device(setting)
    cuda = base.type == "cuda"
    count = gpu_count() if count is None else int(count)
    if not cuda and devices is None:
        yield Lease(None, base)
        return
    pool = candidates(devices, count, cuda=cuda)
    folder = Path(root) if root is not None else lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    held = index = None
    while held is None:
        with _local:
            for i in pool:
                held = _try_lock(folder / f"{_physical(i, cuda)}.lock")
                if held is not None:
                    index = i
                    break
        if held is None:
            if time.monotonic() > deadline:
                raise ConfigError(f"no free device among train.deep.devices={pool} after {timeout:.0f} s "
                                  f"(held by the processes named in {folder}/*.lock)")
            time.sleep(poll)
    device = torch.device("cuda", index) if cuda else base
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            with torch.cuda.device(device):
                yield Lease(index, device)
        else:
            yield Lease(index, device)
    finally:
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
        fcntl.flock(held, fcntl.LOCK_UN)
        held.close()


def device_tags(device) -> dict[str, str]:
    """MLflow tags naming the device (and the GPU)."""
    import torch

    tags = {"fvc.device": device.type}
    if device.type == "cuda":
        tags["fvc.gpu_name"] = torch.cuda.get_device_name(device)
    return tags


def peak_memory(device) -> dict[str, Any]:
    """Peak GPU memory of this model in MiB (a tag; the lease resets the statistics), nothing on the CPU."""
    import torch

    if device.type != "cuda":
        return {}
    return {"fvc.gpu_peak_mib": f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"}


def release_memory(device) -> None:
    """Free what the last fit left on ``device`` (garbage, the caching allocator's blocks); the
    peak statistics stay the model's (the lease resets them)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- defaults chosen for the device -------------------------------------------------------------
#: bytes of training memory per input element of a clip (activations, their gradients, the
#: optimiser's share), by precision: an estimate from r2plus1d_18 at 16x112x112 (about 0.6 GB
#: per clip in fp32); the batch a device gets is a power of two within ``SAFETY`` of free memory
BYTES_PER_INPUT = {"fp32": 1024, "bf16": 512}
SAFETY = 0.6
CPU_BATCH = 8
MAX_BATCH = 256


@dataclass(frozen=True)
class DeviceInfo:
    """What the defaults depend on: the device's kind, name, CUDA capability and memory (MiB)."""

    type: str                           # "cpu" or "cuda"
    name: str = "cpu"
    capability: tuple[int, int] = (0, 0)
    total_mib: int = 0
    free_mib: int = 0


def describe(device) -> DeviceInfo:
    """The :class:`DeviceInfo` of a torch device (CUDA: its properties and free memory now)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return DeviceInfo(device.type)
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    return DeviceInfo("cuda", props.name, (props.major, props.minor), total // 2**20, free // 2**20)


@dataclass(frozen=True)
class Defaults:
    """The batch size, precision and memory format a model trains with, and which of them the
    device chose (the user left them unset)."""

    batch_size: int
    precision: str
    channels_last: bool
    chosen: tuple[str, ...]

    def params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "precision": self.precision,
                "channels_last": self.channels_last, "defaults_chosen": ",".join(self.chosen) or "none"}


def choose_defaults(info: DeviceInfo, *, clip_elements: int, conv3d: bool, batch_size: int | None = None,
                    precision: str | None = None, channels_last: bool | None = None) -> Defaults:
    """What a model trains with on ``info``: the settings given, the rest chosen for the device.

    - precision: bf16 on CUDA of capability 8.0 or later (Ampere, Hopper), fp32 before and on the CPU;
    - channels_last_3d: on CUDA for a model with 3D convolutions;
    - batch: on the CPU :data:`CPU_BATCH`; on CUDA the largest power of two whose estimated
      memory (``clip_elements`` input values per clip x :data:`BYTES_PER_INPUT`) fits in
      :data:`SAFETY` of the free memory, between 1 and :data:`MAX_BATCH`.

    >>> h100 = DeviceInfo("cuda", "H100", (9, 0), 81_000, 80_000)
    >>> choose_defaults(h100, clip_elements=3 * 16 * 112 * 112, conv3d=True).params()["defaults_chosen"]
    'batch_size,precision,channels_last'
    >>> choose_defaults(h100, clip_elements=3 * 16 * 112 * 112, conv3d=True).batch_size
    128
    >>> cpu = choose_defaults(DeviceInfo("cpu"), clip_elements=602112, conv3d=True, batch_size=4)
    >>> cpu.batch_size, cpu.precision, cpu.channels_last, cpu.chosen
    (4, 'fp32', False, ('precision', 'channels_last'))
    """
    cuda = info.type == "cuda"
    chosen = []
    if precision is None:
        precision = "bf16" if cuda and info.capability >= (8, 0) else "fp32"
        chosen.append("precision")
    if batch_size is None:
        if cuda:
            per_clip = max(1, clip_elements) * BYTES_PER_INPUT.get(precision, BYTES_PER_INPUT["fp32"])
            fits = int(info.free_mib * 2**20 * SAFETY // per_clip)
            batch_size = min(MAX_BATCH, 1 << (max(1, fits).bit_length() - 1))
        else:
            batch_size = CPU_BATCH
        chosen.insert(0, "batch_size")
    if channels_last is None:
        channels_last = cuda and conv3d
        chosen.append("channels_last")
    return Defaults(int(batch_size), precision, bool(channels_last), tuple(chosen))
