"""Stage 3 through a VAE (``scale.method = "autoencoder"``) beside the letterbox. RANDOM WEIGHTS: the
Hugging Face cache here is empty and there is no network, so every figure below is of an untrained VAE
(the architecture, hence the speed and memory, are Stable Diffusion's; the pictures are not).

    .venv/bin/python -m benchmarks.scale_autoencoder [--parts speed,memory,features] [--full]

1. speed: frames/s at 360p (640x360) -> 256, the letterbox vs the autoencoder with
   ``stabilityai/sd-vae-ft-mse``'s configuration (83 M parameters), one process, the same frames, CPU.
2. memory: the peak resident memory one frame adds (each case in a fresh process: ru_maxrss minus
   the resident size before the frame), 360p and 1080p with 512-pixel tiles, 360p untiled; and
   torch's peak CUDA allocation when a GPU is present.
3. features: the demo corpus (the small one, 16 videos; ``--full``: 80; ``--videos N``: its first N)
   through stage 3 both ways
   (the autoencoder: Stable Diffusion's layout at an eighth of its widths, random weights, so that
   it runs in minutes on a CPU), then stage 4 on each: per frame feature, the median and the
   interquartile range of each method, and the two-sample Kolmogorov-Smirnov statistic between them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

BENCH = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench")) / "scale-autoencoder"
#: stabilityai/sd-vae-ft-mse's config.json (the architecture only)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              act_fn="silu", sample_size=256, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
QUARTER = {**SD_VAE, "block_out_channels": (32, 64, 128, 128), "norm_num_groups": 8}
EIGHTH = {**SD_VAE, "block_out_channels": (16, 32, 64, 64), "norm_num_groups": 8}


def vae_folder(name: str, cfg: dict) -> Path:
    import torch
    from diffusers import AutoencoderKL

    folder = BENCH / name
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        AutoencoderKL(**cfg).save_pretrained(folder)
    return folder


def frame_at(width: int, height: int) -> np.ndarray:
    from skimage.data import astronaut

    return cv2.resize(astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)


def coder(folder: Path, size: int, tile: int | None, device: str = "auto"):
    from fvcflow.models.weights import resolve_autoencoder
    from fvcflow.stages.autoencoder import Autoencoder, load_vae, pick_device

    w = resolve_autoencoder(str(folder))
    return Autoencoder(load_vae(str(w.folder), w.identity, str(pick_device(device))), size, tile=tile)


def speed(n_auto: int = 3) -> None:
    from fvcflow.stages.scale import letterbox_frame

    frames = [np.roll(frame_at(640, 360), 7 * i, axis=1) for i in range(max(n_auto, 50))]
    t0 = time.perf_counter()
    for f in frames:
        letterbox_frame(f, 256)
    lb = len(frames) / (time.perf_counter() - t0)
    c = coder(vae_folder("sd-vae-ft-mse-random", SD_VAE), 256, 512, device="cpu")
    c.frame(frames[0])                                      # warm-up
    t0 = time.perf_counter()
    for f in frames[:n_auto]:
        c.frame(f)
    ae = n_auto / (time.perf_counter() - t0)
    print(f"speed, 360p -> 256, CPU ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}): letterbox "
          f"{lb:.1f} frames/s, autoencoder (SD VAE, random weights) {ae:.3f} frames/s: {lb / ae:.0f}x slower")


def _one_frame(width: int, height: int, tile: int, sd: bool) -> None:
    """Child: the peak memory one frame adds (printed as JSON)."""
    import psutil
    import torch

    folder = (vae_folder("sd-vae-ft-mse-random", SD_VAE) if sd
              else vae_folder("sd-layout-quarter-random", QUARTER))
    c = coder(folder, 256, tile or None)
    frame = frame_at(width, height)
    before = psutil.Process().memory_info().rss
    if c.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    c.frame(frame)
    out = {"seconds": time.perf_counter() - t0, "device": c.device.type,
           "peak_rss_added_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20}
    if c.device.type == "cuda":
        out["cuda_peak_added_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(json.dumps(out))


def memory(sd: bool) -> None:
    what = "SD VAE" if sd else "SD layout at quarter widths"
    for width, height, tile in ((640, 360, 512), (1920, 1080, 512), (640, 360, 0)):
        # a file under -P: neither the root nor benchmarks/ on sys.path (their kernels would hide HF's)
        cmd = [sys.executable, "-P", str(Path(__file__).resolve()),
               "--child", f"{width},{height},{tile},{int(sd)}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"memory child {cmd[2:]} failed:\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        cuda = f", CUDA peak +{r['cuda_peak_added_mb']:.0f} MiB" if "cuda_peak_added_mb" in r else ""
        print(f"memory ({what}, random weights), one {width}x{height} frame -> 256, "
              f"{'tile ' + str(tile) if tile else 'untiled'} "
              f"({r['device']}): peak RSS +{r['peak_rss_added_mb']:.0f} MiB{cuda}, {r['seconds']:.1f} s")


def subset(corpus, n: int) -> tuple[Path, Path]:
    """The first ``n`` videos of a demo corpus (its labels' order: a real and its fake per source), as
    copies in a folder of their own (ingest refuses links leading out of a corpus): (root, labels.csv)."""
    rows = corpus.labels_csv.read_text().splitlines()
    if not n or n >= len(rows) - 1:
        return corpus.root, corpus.labels_csv
    root = BENCH / f"{corpus.root.name}-{n}"
    for line in rows[1:n + 1]:
        rel = line.split(",")[0]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            shutil.copy2(corpus.root / rel, root / rel)
    (root / "labels.csv").write_text("\n".join(rows[:n + 1]) + "\n")
    return root, root / "labels.csv"


def features(full: bool, n_videos: int) -> None:
    from scipy.stats import ks_2samp

    from fvcflow.config import Settings
    from fvcflow.demo.corpus import make_demo_corpus
    from fvcflow.ingest import ingest
    from fvcflow.kernels import FEATURE_NAMES
    from fvcflow.stages import runner
    from fvcflow.store import read_parquet

    corpus = make_demo_corpus(BENCH / ("corpus" if full else "corpus-small"), small=not full)
    root, labels = subset(corpus, n_videos)
    which = f"{'full' if full else 'small'}{f'-{n_videos}' if n_videos else ''}"
    folder = vae_folder("sd-layout-eighth-random", EIGHTH)
    tables = {}
    for method in ("letterbox", "autoencoder"):
        home = BENCH / f"{which}-{method}"
        s = Settings(home=home, workers=1, augment={"copies": 0},
                     scale={"method": method, "weights": str(folder), "tile": 512}).resolved()
        if read_parquet(s.lake().index) is None:
            ingest("folder", root, s.lake(), labels=labels, workers=1)
        t0 = time.perf_counter()
        rep = runner.run_local("scale", s)
        frames = int(read_parquet(s.lake().stage3)["n_frames"].sum())
        print(f"features, stage 3 {method}: {rep.done} videos done, {rep.cached} cached, {frames} frames, "
              f"{time.perf_counter() - t0:.1f} s")
        runner.run_local("scaled_features", s)
        tables[method] = read_parquet(s.lake().stage4).sort("video_id")
    a, b = tables["letterbox"], tables["autoencoder"]
    print(f"features, stage 4 on the {which} demo corpus ({a.height} videos), "
          "letterbox vs autoencoder (SD layout at 1/8 widths, random weights): median [IQR] each, "
          "KS statistic")
    for name in FEATURE_NAMES:
        col = f"s4_{name}_mean"                     # the per-video mean over the sampled frames
        if col not in a.columns:
            continue
        x, y = a[col].drop_nulls().to_numpy(), b[col].drop_nulls().to_numpy()
        q = lambda v: f"{np.median(v):10.4g} [{np.percentile(v, 25):.3g}, {np.percentile(v, 75):.3g}]"  # noqa: E731
        print(f"  {col:34s} letterbox {q(x):34s} autoencoder {q(y):34s} KS {ks_2samp(x, y).statistic:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="speed,memory,features")
    p.add_argument("--full", action="store_true", help="the full demo corpus (80 videos) for the features")
    p.add_argument("--videos", type=int, default=0,
                   help="only the corpus's first N videos (a real and its fake per source) for the features")
    p.add_argument("--sd-memory", action="store_true",
                   help="measure memory with the full SD VAE (default: its layout at quarter widths: "
                        "the same tiling, minutes instead of an hour on a CPU)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    BENCH.mkdir(parents=True, exist_ok=True)
    if args.child:
        width, height, tile, sd = (int(v) for v in args.child.split(","))
        return _one_frame(width, height, tile, bool(sd))
    parts = args.parts.split(",")
    if "speed" in parts:
        speed()
    if "memory" in parts:
        memory(args.sd_memory)
    if "features" in parts:
        features(args.full, args.videos)


if __name__ == "__main__":
    main()
