"""The torch ``Dataset``/``DataLoader`` over cached clips: one item per (video, clip).

An item is ``(clip float32[C, T, H, W], label float32, video position int64)``. Training items
take a random temporal offset inside their window, a random horizontal flip and a random
resized crop (area 80-100%, resized back); evaluation items take the middle offset and nothing
else. The randomness of item ``i`` in epoch ``e`` comes from a generator seeded with
``(seed, e, i)``, so runs repeat whatever the number of workers. Normalisation is the model's
(``ClipSpec.mean``/``std``, on ``[0, 1]`` values).

The trainer's loader (``make_loader(..., raw=True)``) splits that work where it is cheapest: a
worker only copies the clip's frames out of the cached uint8 window (one contiguous copy: the
memory bound) and ships uint8, a quarter of float32's bytes, with its draws (flip and crop box);
:func:`to_input` then converts, crops, mirrors and resizes (one ``grid_sample`` whose grid
clamps to the crop as ``F.interpolate`` does) and normalises the whole batch on the device
(:class:`RawClips`). ``ds[i]`` gives the same numbers
through the same code, one item on the CPU.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from fvcflow.deep.clips import ClipCache, ClipSource, clip_offsets, eval_offset, jitter
from fvcflow.models.torch_common import ClipSpec

#: memory-mapped clip files a dataset keeps open per process (a cache load stats, checks and maps)
MAPPED_VIDEOS = 256


class ClipDataset(Dataset):
    """Clips of ``sources`` (labels ``labels``) for one model's :class:`ClipSpec`.

    The windows are read from ``cache`` (checked ``.clip`` files, memory-mapped): call :meth:`prepare`
    first to decode what is missing in this process, so that workers only read.
    """

    def __init__(self, sources: Sequence[ClipSource], labels: Sequence[int], spec: ClipSpec,
                 cache: ClipCache, *, train: bool, seed: int = 0):
        self.sources = list(sources)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.spec, self.cache, self.train, self.seed = spec, cache, train, int(seed)
        self._memory: dict[int, np.ndarray] = {}

    def prepare(self) -> "ClipDataset":
        """Decode (and cache) every video's windows now; without a cache root, keep them in memory."""
        for i, src in enumerate(self.sources):
            arr = self.cache.load(src, self.spec)
            if self.cache.root is None:
                self._memory[i] = np.asarray(arr)
        return self

    def __len__(self) -> int:
        return len(self.sources) * self.spec.clips

    def __getstate__(self) -> dict:             # a worker maps the files itself
        return {k: v for k, v in self.__dict__.items() if k != "_mapped"}

    def _windows(self, v: int) -> np.ndarray:
        if v in self._memory:
            return self._memory[v]
        mapped = self.__dict__.setdefault("_mapped", OrderedDict())    # per process (each worker its own)
        if v in mapped:
            mapped.move_to_end(v)
            return mapped[v]
        arr = mapped[v] = self.cache.load(self.sources[v], self.spec).view(np.ndarray)   # mapped: kept open
        if len(mapped) > MAPPED_VIDEOS:
            mapped.popitem(last=False)
        return arr

    def raw(self, index: int):
        """Item ``index`` as the worker ships it: ``(uint8[T, H, W, C] frames of the window, int32[5]
        (flip, crop top, crop left, crop height, crop width), label, video)``: the worker copies the
        clip's frames once (the memory bound) and the device crops, mirrors and resizes
        (:func:`to_input`)."""
        epoch, i = divmod(int(index), len(self))        # EpochSampler folds the epoch into the index
        v, k = divmod(i, self.spec.clips)
        win = self._windows(v)[k]                                   # uint8[W, h, w, C]
        gen = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFFFFFF)
        if self.train:
            offset = int(torch.randint(0, jitter(self.spec) + 1, (1,), generator=gen))
        else:
            offset = eval_offset(self.spec)
        offsets = clip_offsets(self.spec, offset)
        _, h, w, _ = win.shape
        flip, y0, x0, ch, cw = 0, 0, 0, h, w
        if self.train:                  # the draws of `augment`, in its order
            flip = int(torch.rand(1, generator=gen).item() < 0.5)
            area = 0.8 + 0.2 * torch.rand(1, generator=gen).item()
            ch, cw = max(1, round(h * area ** 0.5)), max(1, round(w * area ** 0.5))
            y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            if flip:                    # the crop of the mirrored picture, in the picture's columns
                x0 = w - x0 - cw        # (the device mirrors it: to_input)
        frames = win[offsets]                                        # T, h, w, C: one contiguous copy
        aug = torch.from_numpy(np.array([flip, y0, x0, ch, cw], np.int32))   # the device crops it
        return (torch.from_numpy(frames), aug, torch.from_numpy(self.labels[v:v + 1]).reshape(()),
                torch.from_numpy(np.array(v, np.int64)))

    def __getitem__(self, index: int):
        frames, aug, y, v = self.raw(index)
        x = to_input(RawClips(frames[None], aug[None]), self.spec, torch.device("cpu"))[0]
        return x, y, v


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random resized crop (80-100% of the area), same for every frame."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(-1)
        if x.shape[0] == 5:     # a mirrored flow field points the other way: dx code 128 + d -> 128 - d
            x[3] = 256.0 / 255.0 - x[3]
    _, t, h, w = x.shape
    area = 0.8 + 0.2 * torch.rand(1, generator=gen).item()
    ch, cw = max(1, round(h * area ** 0.5)), max(1, round(w * area ** 0.5))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    crop = x[:, :, y0:y0 + ch, x0:x0 + cw]
    if (ch, cw) != (h, w):
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    return crop


def normalise(x: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """``(x - mean) / std`` per RGB channel of a ``[C, T, H, W]`` clip in ``[0, 1]``; flow channels
    (``rgb+flow`` clips) are decoded to units of ``fvcflow.deep.flow.FLOW_BOUND`` pixels."""
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(3, 1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(3, 1, 1, 1)
    x[:3] = (x[:3] - mean) / std
    if x.shape[0] == 5:     # flow channels: uint8 code / 255 -> units of FLOW_BOUND pixels, [-1, 1]
        x[3:] = (x[3:] * 255.0 - 128.0) / 127.0
    return x


class RawClips:
    """A batch of uint8 clips ``[B, T, H, W, C]`` (or a list of ``[T, H, W, C]`` of different shapes)
    and their int32 ``(flip, crop top, crop left, crop h, crop w)``, as the loader ships them; pinnable."""

    def __init__(self, data, aug: torch.Tensor):
        self.data, self.aug = data, aug

    def pin_memory(self) -> "RawClips":
        data = [d.pin_memory() for d in self.data] if isinstance(self.data, list) else self.data.pin_memory()
        return RawClips(data, self.aug.pin_memory())

    def __len__(self) -> int:
        return len(self.aug)


def to_input(raw: RawClips, spec: ClipSpec, device: torch.device, *,
             memory_format: torch.memory_format | None = None):
    """The model's float input of ``raw`` on ``device``: to ``[0, 1]``, crops resized back to the
    clip size (bilinear, as ``F.interpolate`` with clamped edges), flipped flow fields negated,
    normalised; a list stays a list. Runs on the whole batch at once, with no host sync."""
    if isinstance(raw.data, list):
        return [to_input(RawClips(d[None], raw.aug[i:i + 1]), spec, device)[0]
                for i, d in enumerate(raw.data)]
    x = raw.data.to(device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)   # B, C, T, H, W
    aug = raw.aug.to(device, non_blocking=True)
    b, c, t, h, w = x.shape
    host = raw.aug                                          # read on the host copy: no device sync
    full = torch.tensor([0, 0, 0, h, w], dtype=host.dtype)
    if host.ne(full).any():
        moved = aug.ne(full.to(device)).any(1)
        flip, y0, x0 = aug[:, 0:1].float(), aug[:, 1:2].float(), aug[:, 2:3].float()
        ch, cw = aug[:, 3:4].float(), aug[:, 4:5].float()
        # source pixel of each output pixel as F.interpolate(align_corners=False) computes it in the
        # crop (clamped to the crop: its edge repeats), then mirrored and moved into the picture
        sy = ((torch.arange(h, device=device) + 0.5) * ch / h - 0.5).clamp(min=0).minimum(ch - 1)
        sx = ((torch.arange(w, device=device) + 0.5) * cw / w - 0.5).clamp(min=0).minimum(cw - 1)
        sx = torch.where(flip.bool(), cw - 1 - sx, sx) + x0
        sy = sy + y0
        gx = (2 * sx + 1) / w - 1                                         # B, W (grid_sample's units)
        gy = (2 * sy + 1) / h - 1                                         # B, H
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)   # B, H, W, 2
        flat = x.reshape(b, c * t, h, w)
        resized = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = torch.where(moved.view(b, 1, 1, 1), resized, flat).reshape(b, c, t, h, w)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=device).view(1, 3, 1, 1, 1)
    rgb = (x[:, :3] - mean) / std
    if c == 5:      # flow: a mirrored field points the other way (code 128 + d -> 128 - d), then units
        dx, dy = x[:, 3:4] * 255.0, x[:, 4:5] * 255.0
        dx = torch.where(aug[:, 0].bool().view(b, 1, 1, 1, 1), 256.0 - dx, dx)
        x = torch.cat([rgb, (dx - 128.0) / 127.0, (dy - 128.0) / 127.0], 1)
    else:
        x = rgb
    return x.contiguous(memory_format=memory_format) if memory_format is not None else x


def collate_raw(batch):
    """Stack same-shaped uint8 clips into a :class:`RawClips`; different shapes stay a list."""
    xs, augs, ys, vs = zip(*batch)
    same = all(x.shape == xs[0].shape for x in xs)
    clips = RawClips(torch.stack(xs) if same else list(xs), torch.stack(augs))
    return clips, torch.stack(ys), torch.stack(vs)


class _Raw(Dataset):
    """``ds`` giving :meth:`ClipDataset.raw` items (what a worker ships)."""

    def __init__(self, ds: ClipDataset):
        self.ds = ds

    def __getattr__(self, name: str):          # sources, spec, ...: the wrapped dataset's
        if name == "ds":                        # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.ds, name)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        return self.ds.raw(index)


def collate(batch):
    """Stack same-shaped clips; clips of different shapes (variable aspect) stay a list."""
    xs, ys, vs = zip(*batch)
    same = all(x.shape == xs[0].shape for x in xs)
    return (torch.stack(xs) if same else list(xs)), torch.stack(ys), torch.stack(vs)


class EpochSampler(Sampler):
    """Indices ``epoch * n + i`` (shuffled per epoch when asked): the dataset reads the epoch from
    the index, so persistent workers need no message to change their augmentation."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
                 if self.shuffle else torch.arange(self.n))
        return iter((order + self.epoch * self.n).tolist())


def make_loader(ds: ClipDataset, *, batch_size: int, shuffle: bool, workers: int, pin_memory: bool,
                seed: int = 0, raw: bool = False, prefetch: int = 4,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader over ``ds``: seeded per-epoch order (``loader.sampler.set_epoch``), persistent
    worker processes prefetching ``prefetch`` batches each, pinned memory on CUDA. Its own
    generator draws the workers' base seed, so iterating never moves torch's global RNG (the
    model's dropout stream): a training resumed at epoch ``e`` draws what an uninterrupted one
    draws, with or without (persistent) workers. ``raw``: batches of :class:`RawClips` (uint8, for
    :func:`to_input` on the device) instead of float clips. ``sampler``: another sampler of
    ``epoch * n + i`` indices (a DDP rank's share: :class:`fvcflow.deep.distributed.ShardSampler`)."""
    extra = {"prefetch_factor": prefetch} if workers > 0 else {}
    sampler = EpochSampler(len(ds), shuffle=shuffle, seed=seed) if sampler is None else sampler
    return DataLoader(_Raw(ds) if raw else ds, batch_size=batch_size,
                      sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, collate_fn=collate_raw if raw else collate, drop_last=False,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed), **extra)
