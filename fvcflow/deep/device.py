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
