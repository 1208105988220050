"""Stage 1 cost of the self-blended pseudo-fakes (issue 22), side by side in one run.

On one synthetic video (``--seconds`` at ``--size``, written with PyAV as the tests do), times
what stage 1 does per real video: ``--copies`` augmented copies alone, and the same copies plus
``--self-blend`` pseudo-fakes (each with its lossless mask video), and prints seconds per copy
and the ratio. Run from the repository root::

    .venv/bin/python -m benchmarks.self_blend [--seconds 4] [--size 640x360] [--copies 4] [--self-blend 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fvcflow.stages.augment import augment_video, blend_video, draw_blend_params, draw_params
from tests.media import write_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--self-blend", type=int, default=2)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        src = write_video(Path(tmp) / "real.mp4", n=int(a.seconds * 25), width=w, height=h, fps=25)
        t0 = time.perf_counter()
        for k in range(1, a.copies + 1):
            augment_video(src, Path(tmp) / f"aug{k}.mp4", draw_params("real", k))
        aug = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(1, a.self_blend + 1):
            row = blend_video(src, Path(tmp) / f"blend{k}.mp4", Path(tmp) / f"blend{k}-mask.mkv",
                              draw_blend_params("real", k))
        blend = time.perf_counter() - t0
        mask_mb = sum(p.stat().st_size for p in Path(tmp).glob("*-mask.mkv")) / 2**20
        copy_mb = sum(p.stat().st_size for p in Path(tmp).glob("blend*.mp4")) / 2**20
    print(f"video: {a.seconds:g} s at {w}x{h}, 25 fps")
    per_copy = aug / max(a.copies, 1)
    print(f"stage 1, {a.copies} augmented copies: {aug:.2f} s ({per_copy:.2f} s per copy)")
    per_blend = blend / max(a.self_blend, 1)
    print(f"stage 1, + {a.self_blend} pseudo-fakes: {aug + blend:.2f} s ({per_blend:.2f} s "
          f"per pseudo-fake, mask area {row['mask_area']:.3f}); ratio with/without "
          f"{(aug + blend) / aug:.2f}x")
    print(f"disk: pseudo-fakes {copy_mb:.2f} MiB, their masks {mask_mb:.2f} MiB")


if __name__ == "__main__":
    main()
