"""Deep video models: training and inference clips/s of every registered torch model, side by side.

CPU part (always): every ``torch_video`` model at its registered architecture on tiny clips
(8 x 64 x 64, batch 4, random weights): training clips/s (forward, backward, AdamW step) and
inference clips/s (``no_grad``, eval mode), and the process's peak RSS after each model.

GPU part (only when CUDA is present): ``r2plus1d_18`` at 16 x 112 x 112, bf16 autocast, batch 32
(then ``timesformer_base`` at 8 x 224 x 224, ``slowfast_r50`` at 32 x 224 x 224 and ``clip_ln``
(ViT-B/16 per frame) at 8 x 224 x 224, batch 8):
training clips/s fed by the real cached-clip DataLoader (``fvcflow.deep.data``, worker processes,
pinned memory) against the same loop on clips already in GPU memory; the ratio must be >= 0.85
(loading does not starve the GPU). Peak GPU memory is printed. A few minutes at most.

    python -m benchmarks.deep [--models PATTERN] [--steps N] [--tiny] [--gpu-steps N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fvcflow.models import get_model_spec, list_models
from fvcflow.models.torch_common import build_video_model, clip_spec


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_rates(name: str, steps: int, batch: int = 4, tiny: bool = False) -> tuple[float, float]:
    """(training clips/s, inference clips/s) of model ``name`` on 8 x 64 x 64 clips (``tiny``: the
    architecture shrunk by its registered tiny keywords)."""
    clip = clip_spec(name, {"frames": 8, "size": None if clip_spec(name).size is None else 64})
    params = get_model_spec(name).extra.get("tiny", {}).get("params", {}) if tiny else {}
    model = build_video_model(name, clip=clip, **params)
    x = torch.randn(batch, clip.n_channels, 8, 64, 64)     # 5 channels for rgb+flow (two-stream)
    y = torch.tensor([i % 2 for i in range(batch)], dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)

    def train_step():
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    train_step()                                           # warm-up (allocations, first-call paths)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    train = steps * batch / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
    infer = steps * batch / (time.perf_counter() - start)
    return train, infer


def gpu_ratio(steps: int, batch: int = 32, workers: int = 8, name: str = "r2plus1d_18",
              frames: int = 16, size: int = 112) -> None:
    """``name`` at ``frames`` x ``size`` x ``size``, bf16: DataLoader-fed vs in-GPU-memory training
    clips/s."""
    from fvcflow.deep.clips import ClipCache, ClipSource
    from fvcflow.deep.data import ClipDataset, make_loader
    from fvcflow.video import VideoWriter

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    clip = clip_spec(name, {"frames": frames, "clips": 4, "size": size})
    with tempfile.TemporaryDirectory(prefix="fvc-bench-deep-") as tmp:
        rng = np.random.default_rng(0)
        sources = []
        for i in range(64):                                # 64 letterboxed 256 px videos, 3 s at 25 fps
            path = Path(tmp) / f"v{i}.mp4"
            with VideoWriter(path, 256, 256, 25.0) as w:
                w.write(rng.integers(0, 255, (75, 256, 256, 3), dtype=np.uint8))
            sources.append(ClipSource(f"v{i}", str(path), f"h{i}", 75))
        cache = ClipCache(Path(tmp) / "clips")
        ds = ClipDataset(sources, [i % 2 for i in range(64)], clip, cache, train=True).prepare()
        loader = make_loader(ds, batch_size=batch, shuffle=True, workers=workers, pin_memory=True)
        model = build_video_model(name, clip=clip).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)

        def step(x, y):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def from_loader(n: int) -> float:
            done, epoch, start = 0, 0, None
            while done < n:
                loader.sampler.set_epoch(epoch)
                for x, y, _ in loader:
                    step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                    if start is None:                      # the first batch warms up
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        continue
                    done += 1
                    if done == n:
                        break
                epoch += 1
            torch.cuda.synchronize()
            return n * batch / (time.perf_counter() - start)

        def in_memory(n: int) -> float:
            x = torch.randn(batch, clip.n_channels, frames, size, size, device=device)
            y = (torch.arange(batch, device=device) % 2).float()
            step(x, y)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(n):
                step(x, y)
            torch.cuda.synchronize()
            return n * batch / (time.perf_counter() - start)

        torch.cuda.reset_peak_memory_stats()
        fed, resident = from_loader(steps), in_memory(steps)
        print(f"GPU {torch.cuda.get_device_name(0)}: {name} {frames}x{size}x{size} bf16 batch {batch}: "
              f"DataLoader {fed:.1f} clips/s ({workers} workers) vs in GPU memory {resident:.1f} clips/s: "
              f"ratio {fed / resident:.2f} (target >= 0.85); peak GPU memory "
              f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="*", help="fnmatch patterns over the torch_video models")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (CPU)")
    ap.add_argument("--gpu-steps", type=int, default=40, help="timed steps of each GPU loop")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="shrink the architectures (registered tiny keywords)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list_models(args.models, kind="torch_video")
    print(f"CPU ({torch.get_num_threads()} threads), tiny clips 8x64x64, batch 4, random weights, "
          f"{'tiny' if args.tiny else 'registered'} architectures; {args.steps} timed steps")
    print(f"{'model':24s} {'train clips/s':>14s} {'infer clips/s':>14s} {'peak RSS MiB':>13s}")
    for name in names:
        train, infer = cpu_rates(name, args.steps, tiny=args.tiny)
        print(f"{name:24s} {train:14.1f} {infer:14.1f} {_rss_mib():13.0f}", flush=True)
    if torch.cuda.is_available():
        gpu_ratio(args.gpu_steps)
        # part 2's targets: TimeSformer and SlowFast-R50 at their standard input sizes
        gpu_ratio(args.gpu_steps, batch=8, name="timesformer_base", frames=8, size=224)
        gpu_ratio(args.gpu_steps, batch=8, name="slowfast_r50", frames=32, size=224)
        # the CLIP family at its registered size: ViT-B/16 per frame, 8 x 224 x 224
        gpu_ratio(args.gpu_steps, batch=8, name="clip_ln", frames=8, size=224)
    else:
        print("GPU part: not run (no CUDA device here; no GPU machine was lent to this task)")


if __name__ == "__main__":
    main()
