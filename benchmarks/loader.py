"""The clip loader on the CPU, side by side in one run: 16 x 112 x 112 training clips per second.

Three producers of the same items from the same memory-mapped clip cache, each in one process
(what one DataLoader worker does):

- ``copy``: a copy of the clip's uint8 bytes out of the cache (the memory bound);
- ``uint8``: today's worker (:meth:`fvcflow.deep.data.ClipDataset.raw`: one copy of the clip's
  frames and the draws, uint8 out; the device crops);
- ``uint8 (crop on the worker)``: the first uint8 worker of #24, which cropped into a clip-sized
  buffer and filled its margin (0.29 of the bound when it was measured);
- ``float``: the worker before issue #24 (float32 conversion, flip, crop-resize and normalisation
  per clip on the worker, 4x the bytes out).

Then the device-side half of ``uint8`` (:func:`fvcflow.deep.data.to_input`, batched, here on the
CPU) and both loaders through a real ``DataLoader`` with 2 workers. Targets: ``uint8`` at least
half the copy bound and at least 4x ``float``.

    python -m benchmarks.loader [--clips N] [--videos N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fvcflow.deep.clips import ClipCache, ClipSource, clip_offsets, jitter
from fvcflow.deep.data import ClipDataset, RawClips, augment, collate_raw, make_loader, normalise, to_input
from fvcflow.models.torch_common import ClipSpec
from fvcflow.video import VideoWriter

SPEC = ClipSpec(frames=16, clips=4, size=112)


def old_item(ds: ClipDataset, index: int):
    """An item as the loader before #24 made it (float32 on the worker)."""
    epoch, i = divmod(int(index), len(ds))
    v, k = divmod(i, ds.spec.clips)
    win = ds._windows(v)[k]
    gen = torch.Generator().manual_seed(hash((ds.seed, epoch, i)) & 0x7FFFFFFF)
    offset = int(torch.randint(0, jitter(ds.spec) + 1, (1,), generator=gen))
    frames = np.ascontiguousarray(win[clip_offsets(ds.spec, offset)])
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)
    return normalise(augment(x, gen), ds.spec), torch.tensor(ds.labels[v]), torch.tensor(v)


def margin_item(ds: ClipDataset, index: int):
    """An item as the first uint8 worker of #24 made it: the crop copied into a clip-sized buffer
    whose margin repeats the crop's edge."""
    epoch, i = divmod(int(index), len(ds))
    v, k = divmod(i, ds.spec.clips)
    win = ds._windows(v)[k]
    gen = torch.Generator().manual_seed(hash((ds.seed, epoch, i)) & 0x7FFFFFFF)
    offsets = clip_offsets(ds.spec, int(torch.randint(0, jitter(ds.spec) + 1, (1,), generator=gen)))
    _, h, w, _ = win.shape
    flip = int(torch.rand(1, generator=gen).item() < 0.5)
    area = 0.8 + 0.2 * torch.rand(1, generator=gen).item()
    ch, cw = max(1, round(h * area ** 0.5)), max(1, round(w * area ** 0.5))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    frames = np.empty((len(offsets), h, w, win.shape[-1]), np.uint8)
    for t, o in enumerate(offsets):
        frames[t, :ch, :cw] = win[o, y0:y0 + ch, x0:x0 + cw]
    frames[:, :ch, cw:] = frames[:, :ch, cw - 1:cw]
    frames[:, ch:] = frames[:, ch - 1:ch]
    return (torch.from_numpy(frames), torch.tensor([flip, ch, cw], dtype=torch.int32),
            torch.tensor(ds.labels[v]), torch.tensor(v, dtype=torch.int64))


class OldDataset(torch.utils.data.Dataset):
    def __init__(self, ds: ClipDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, index):
        return old_item(self.ds, index)


def rate(make, n: int) -> float:
    make(0)                                               # warm-up: page the cache in
    start = time.perf_counter()
    for i in range(n):
        make(i)
    return n / (time.perf_counter() - start)


def loader_rate(loader, n: int) -> float:
    seen, start, epoch = 0, None, 0
    while seen < n:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if start is None:                             # the first batch pays the workers' start-up
                start = time.perf_counter()
                continue
            seen += len(batch[1])
        epoch += 1
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400, help="clips timed per producer")
    ap.add_argument("--videos", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fvc-bench-loader-") as tmp:
        rng = np.random.default_rng(0)
        sources = []
        for i in range(args.videos):                      # real encoded videos, decoded once into the cache
            path = Path(tmp) / f"v{i}.mp4"
            with VideoWriter(path, 128, 128, 25.0) as w:
                w.write(rng.integers(0, 255, (50, 128, 128, 3), dtype=np.uint8))
            sources.append(ClipSource(f"v{i}", str(path), f"h{i}", 50))
        cache = ClipCache(Path(tmp) / "clips")
        ds = ClipDataset(sources, [i % 2 for i in range(args.videos)], SPEC, cache, train=True).prepare()
        n = len(ds)
        arrays = [cache.load(s, SPEC) for s in sources]

        def copy(i):
            v, k = divmod(i % n, SPEC.clips)
            return np.array(arrays[v][k, :SPEC.frames])

        bound = rate(copy, args.clips)
        new = rate(lambda i: ds.raw(i), args.clips)
        old = rate(lambda i: old_item(ds, i), args.clips)
        margin = rate(lambda i: margin_item(ds, i), args.clips)
        batch = collate_raw([ds.raw(i) for i in range(32)])
        device_side = rate(lambda i: to_input(batch[0], SPEC, torch.device("cpu")), 5) * 32
        print(f"loader per worker, 16x112x112 clips: copy of the uint8 bytes {bound:.0f} clips/s, "
              f"uint8 worker {new:.0f} clips/s ({new / bound:.2f} of the bound), "
              f"uint8 worker cropping on the worker (before) {margin:.0f} clips/s ({margin / bound:.2f}), "
              f"float worker (before #24) {old:.0f} clips/s; uint8 / float = {new / old:.1f}x")
        print("device half of the uint8 path (to_input, batch 32, this CPU, 1 thread): "
              f"{device_side:.0f} clips/s")
        fed = {}
        for name, dataset in (("uint8", None), ("float", OldDataset(ds))):
            if dataset is None:
                loader = make_loader(ds, batch_size=32, shuffle=True, workers=2, pin_memory=False, raw=True)
            else:
                loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=2,
                                                     sampler=make_loader(ds, batch_size=32, shuffle=True,
                                                                         workers=0, pin_memory=False).sampler,
                                                     persistent_workers=True, prefetch_factor=4)
            fed[name] = loader_rate(loader, args.clips * 2)
        print(f"DataLoader, 2 workers, batch 32: uint8 {fed['uint8']:.0f} clips/s, float (before #24) "
              f"{fed['float']:.0f} clips/s ({fed['uint8'] / fed['float']:.1f}x)")
        ok = new >= 0.5 * bound and new >= 4 * old
        print(f"{'PASS' if ok else 'FAIL'}: uint8 worker >= half the copy bound and >= 4x the float worker")
        assert isinstance(batch[0], RawClips)


if __name__ == "__main__":
    main()
