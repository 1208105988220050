"""``emb_xgb_clip`` beside ``emb_xgb_vit`` on a demo lake: XGBoost on frozen per-frame embeddings.

Reads a work dir that went through stage 3 (``make demo``'s, or ``--home``): its index, stage 3
table and splits are copied into a temporary work dir (videos are read where they are; the real
MLflow store is untouched), then each model is cross-validated on the originals with the same
clips (``--frames`` x ``--size``, ``--clips`` per video), on the CPU. Printed per model: embedding
dimension, seconds (embedding + CV), out-of-fold and test ROC AUC.

The backbones carry random weights unless ``--clip-weights``/``--vit-weights`` name cached ones
(``fvc weights list``): with random weights the AUCs show that the pipeline runs end to end, not
what a pretrained CLIP achieves (the published CLIP detectors need ``open_clip:`` weights).

    .venv/bin/python -m benchmarks.clip_embeddings --home fvc-data [--frames 4 --clips 2 --size 112]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fvcflow.config import Settings
from fvcflow.models import get_model_spec
from fvcflow.store import Lake
from fvcflow.training import TrainConfig, train_model


def _copy_lake(real: Lake, tmp: Path) -> Lake:
    lake = Lake.at(tmp)
    for src in (real.index, real.stage3, real.stage5 / "splits.parquet"):
        if not src.exists():
            raise SystemExit(f"{src} is missing: run the demo through stage 3 and train first (make demo)")
        dst = lake.root / src.relative_to(real.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return lake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None,
                    help="work dir with stage 3 and splits (default: the settings')")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--clip-weights", default="none", help="train.deep.weights.clip_ln (default random)")
    ap.add_argument("--vit-weights", default="none",
                    help="train.deep.weights.vit_small_frames (default random)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    home = Path(args.home) if args.home else Settings.load(None).resolved().home
    real = Lake.at(home)
    clip = {"frames": args.frames, "clips": args.clips, "size": args.size}
    weights = {"clip_ln": args.clip_weights, "vit_small_frames": args.vit_weights}
    print(f"demo lake {real.root}: originals only, {args.frames} frames x {args.size} px, {args.clips} clips "
          f"per video, CPU ({torch.get_num_threads()} threads); weights: clip_ln={args.clip_weights}, "
          f"vit_small_frames={args.vit_weights} ('none' = random weights: the AUCs show the pipeline runs, "
          "not what pretrained backbones achieve)")
    print(f"{'model':16s} {'backbone':18s} {'dim':>5s} {'seconds':>8s} {'oof AUC':>8s} {'test AUC':>9s}")
    with tempfile.TemporaryDirectory(prefix="fvc-bench-clip-") as tmp:
        lake = _copy_lake(real, Path(tmp))
        for name in ("emb_xgb_vit", "emb_xgb_clip"):
            backbone = get_model_spec(name).extra["backbone"]
            cfg = TrainConfig(models=name, use_augmented=False, reuse_splits=True, tracking_uri=None,
                              deep={"device": "cpu", "workers": 0, "batch_size": 16, "clip": {backbone: clip},
                                    "weights": weights})
            start = time.perf_counter()
            result = train_model(lake, name, cfg)
            seconds = time.perf_counter() - start
            test_auc = result.test_metrics.get("roc_auc", float("nan"))
            print(f"{name:16s} {backbone:18s} {len(result.model.columns):5d} {seconds:8.1f} "
                  f"{result.oof_metrics['roc_auc']:8.3f} {test_auc:9.3f}", flush=True)


if __name__ == "__main__":
    main()
