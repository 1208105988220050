"""The torch ``Dataset``/``DataLoader`` over cached clips: one item per (video, clip).

An item is ``(clip float32[C, T, H, W], label float32, video position int64)``. Training items
take a random temporal offset inside their window, a random horizontal flip and a random
resized crop (area 80-100%, resized back); evaluation items take the middle offset and nothing
else. The randomness of item ``i`` in epoch ``e`` comes from a generator seeded with
``(seed, e, i)``, so runs repeat whatever the number of workers. Normalisation is the model's
(``ClipSpec.mean``/``std``, on ``[0, 1]`` values).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from fvcflow.deep.clips import ClipCache, ClipSource, clip_offsets, eval_offset, jitter
from fvcflow.models.torch_common import ClipSpec


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

    def _windows(self, v: int) -> np.ndarray:
        if v in self._memory:
            return self._memory[v]
        return self.cache.load(self.sources[v], self.spec)

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), len(self))        # EpochSampler folds the epoch into the index
        v, k = divmod(i, self.spec.clips)
        win = self._windows(v)[k]                                   # uint8[W, h, w, 3]
        gen = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFFFFFF)
        if self.train:
            offset = int(torch.randint(0, jitter(self.spec) + 1, (1,), generator=gen))
        else:
            offset = eval_offset(self.spec)
        frames = np.ascontiguousarray(win[clip_offsets(self.spec, offset)])
        x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)    # C, T, h, w
        if self.train:
            x = augment(x, gen)
        x = normalise(x, self.spec)
        return x, torch.tensor(self.labels[v]), torch.tensor(v, dtype=torch.int64)


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
                seed: int = 0) -> DataLoader:
    """A DataLoader over ``ds``: seeded per-epoch order (``loader.sampler.set_epoch``), persistent
    worker processes, pinned memory on CUDA. Its own generator draws the workers' base seed, so
    iterating never moves torch's global RNG (the model's dropout stream): a training resumed at
    epoch ``e`` draws what an uninterrupted one draws, with or without (persistent) workers."""
    return DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(ds), shuffle=shuffle, seed=seed),
                      num_workers=workers, pin_memory=pin_memory, collate_fn=collate, drop_last=False,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
