"""One training loop for every torch video model: the baselines' folds, early stopping, video scores.

For each outer fold of ``stage5/splits.parquet`` the model trains on the other folds' videos
(originals and their augmented copies), stops early on a grouped validation split carved from
those training folds (never the outer fold: ``val_fraction`` of the groups, originals only) and
scores the fold's originals; then one more fit on every training row scores the test set and is
the deployable model. A video's score is the mean of its clips' logits, and every metric is
video-level. AdamW (weight decay ``1e-4``), one learning rate from scratch, or backbone and head
rates (``5e-6``/``5e-4``) with pretrained weights; gradient accumulation to ``effective_batch``;
bf16 autocast when ``train.deep.precision`` is bf16 (chosen for the device when unset: Ampere+
CUDA), channels_last_3d when ``channels_last`` (default on CUDA), ``cudnn.benchmark`` on CUDA
only. Seeds are fixed per fold: two CPU runs give equal metrics.

Resume: with a resume cache, every finished fit is kept (see :func:`cross_validate_video`) and,
inside a fit, every finished epoch too (``<tag>.epoch``: weights, optimizer, history, early
stopping state and the RNG states), so a killed training continues from its last epoch and ends
with the weights an uninterrupted run has (bit for bit on CPU). Augmentation and the epoch order
depend only on (seed, epoch, item), never on a global stream.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F

from fvcflow.config import DeepConfig, TrainConfig
from fvcflow.deep import distributed
from fvcflow.deep.clips import ClipCache, ClipSource, face_tags, per_track, pool_tracks, source_of, with_faces
from fvcflow.deep.data import ClipDataset, RawClips, make_loader, to_input
from fvcflow.deep.device import (
    Lease,
    choose_defaults,
    describe,
    device_tags,
    gpu_count,
    lease_device,
    peak_memory,
    release_memory,
)
from fvcflow.deep.distributed import Rank, ShardSampler
from fvcflow.deep.export import TrainedVideo
from fvcflow.deep.nested import inner_oof, wants_inner_oof
from fvcflow.errors import DeviceError, DivergedError, FvcError, VideoError
from fvcflow.metrics import binary_metrics
from fvcflow.models import ModelSpec
from fvcflow.models.grouped import grouped_holdout
from fvcflow.models.torch_common import ClipSpec, build_video_model, clip_spec
from fvcflow.models.weights import resolve, resolve_setting
from fvcflow.progress import emit
from fvcflow.resume import FoldCache, table_digest
from fvcflow.schema import ORIGINAL
from fvcflow.store import Lake, failure_row, read_parquet, record_failures

log = logging.getLogger("fvcflow.deep")


# -- which videos -------------------------------------------------------------------------------
def video_rows(lake: Lake, cfg: TrainConfig, splits: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``splits`` (the table ``stage5/splits.parquet`` holds: video, group, label, fold,
    test flag, variant) joined with their stage 3 video (path, hash, frames, picture size)."""
    scaled = read_parquet(lake.stage3)
    if scaled is None:
        raise FvcError(f"no stage 3 videos at {lake.stage3}: run the scale stage first "
                       "(fvc run --stages scale)")
    keep = [c for c in ("video_id", "path", "content_hash", "n_frames", "src_width", "src_height")
            if c in scaled.columns]
    rows = splits.join(scaled.select(keep).unique("video_id", keep="last"), on="video_id", how="inner")
    if rows.height < splits.height:
        log.warning("%d of %d split rows have no stage 3 video (see index/failures.parquet)",
                    splits.height - rows.height, splits.height)
    if not cfg.use_augmented:
        rows = rows.filter(pl.col("variant") == ORIGINAL)
    return rows.sort("video_id")


def _source(row: dict) -> ClipSource:
    return source_of(row, row.get("face_track") or 0)      # its face track (per_track rows) or the frame


def validation_split(rows: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Carve a grouped, stratified validation set (originals only) from training ``rows``.

    Returns (rows to train on: every row of the other groups, validation originals).
    """
    orig = rows.filter(pl.col("variant") == ORIGINAL)
    _, va = grouped_holdout(orig["label"].to_numpy(), orig["group_id"].to_numpy(), fraction, seed=seed,
                            what="early stopping of a deep model (train.deep.val_fraction)")
    val_groups = set(orig[va]["group_id"].to_list())
    return (rows.filter(~pl.col("group_id").is_in(val_groups)),
            orig.filter(pl.col("group_id").is_in(val_groups)))


# -- one fit ------------------------------------------------------------------------------------
@dataclass
class Fit:
    module: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint: Path


def epoch_tag(tag: str) -> str:
    """The resume-cache name of fit ``tag``'s last finished epoch."""
    return f"{tag}.epoch"


def rng_state(device: torch.device) -> dict:
    """Every random stream a training epoch may draw from (dropout, the loader's base seed)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if device.type == "cuda":           # the device in use only: a resume may see fewer GPUs
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        if isinstance(cuda, (list, tuple)):     # written before 2026-12 (every visible GPU's state)
            cuda = cuda[0] if cuda else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@contextlib.contextmanager
def device_errors(model: str, device: torch.device, batch_size: int):
    """Out of memory and CUDA faults as a :class:`DeviceError` naming the model, device and batch
    size: the same settings cannot pass, so the task fails at once instead of being retried."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise DeviceError(f"{model}: out of memory on {device} at batch size {batch_size} "
                          f"({_first_line(exc)}): lower train.deep.batch_size (train.deep.effective_batch "
                          "keeps the optimiser's batch) or the clip size") from None
    except RuntimeError as exc:
        text = str(exc)
        if "can't allocate memory" in text or "out of memory" in text.lower():
            raise DeviceError(f"{model}: out of memory on {device} at batch size {batch_size} "
                              f"({_first_line(exc)}): lower train.deep.batch_size or the clip size") from None
        if any(k in text for k in ("CUDA error", "CUDNN_STATUS", "CUBLAS_STATUS", "cuDNN error",
                                   "device-side assert", "NCCL error")):
            raise DeviceError(f"{model}: CUDA failed on {device} at batch size {batch_size} "
                              f"({_first_line(exc)}); the device may need a reset (nvidia-smi)") from None
        raise


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def forward(model: nn.Module, x) -> torch.Tensor:
    """Logits of a batch; a list (clips of different shapes) goes through one clip at a time."""
    if isinstance(x, list):
        return torch.cat([model(c.unsqueeze(0)) for c in x])
    return model(x)


class Trainer:
    """Fits and scores one registered deep model with one :class:`DeepConfig` on one device, or as
    one rank ``ctx`` of a DDP model (:mod:`fvcflow.deep.distributed`)."""

    def __init__(self, spec: ModelSpec, clip: ClipSpec, deep: DeepConfig, cache: ClipCache, *,
                 params: dict, weights: str | None, seed: int, device: torch.device,
                 ctx: Rank | None = None):
        self.spec, self.clip, self.deep, self.cache = spec, clip, deep, cache
        self.params, self.weights, self.seed, self.device = params, weights, seed, device
        self.ctx, self.world = ctx, ctx.world if ctx is not None else 1
        self.main = ctx is None or ctx.main         # the process that writes checkpoints and the cache
        per_step = deep.batch_size * self.world
        self.accumulate = max(1, math.ceil((deep.effective_batch or per_step) / per_step))
        self.autocast = (dict(device_type=device.type, dtype=torch.bfloat16) if deep.precision == "bf16"
                         else None)             # train.deep.precision (None: fp32)
        self.memory_format = torch.channels_last_3d if deep.channels_last else None
        self.nonfinite = 0                  # training steps skipped for a non-finite loss, every fit
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True     # fp32 matmuls/convs outside autocast on
            torch.backends.cudnn.allow_tf32 = True           # tensor cores (Ampere and later)

    def _loader(self, rows: pl.DataFrame, *, train: bool, seed: int):
        ds = ClipDataset([_source(r) for r in rows.to_dicts()], rows["label"].to_list(), self.clip,
                         self.cache, train=train, seed=seed).prepare()
        sampler = None if self.ctx is None else ShardSampler(
            len(ds), rank=self.ctx.rank, world=self.world, batch_size=self.deep.batch_size, shuffle=train,
            seed=seed)
        return make_loader(ds, batch_size=self.deep.batch_size, shuffle=train, workers=self.deep.workers,
                           pin_memory=self.device.type == "cuda", seed=seed, raw=True, sampler=sampler)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        head = list(model.head.parameters())
        ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if id(p) not in ids]
        if self.weights and self.spec.extra.get("pretrained_lr", True):
            groups = [{"params": rest, "lr": self.deep.backbone_lr},
                      {"params": head, "lr": self.deep.head_lr}]
        else:
            groups = [{"params": rest + head, "lr": self.deep.lr}]
        fused = {"fused": True} if self.device.type == "cuda" else {}   # one kernel per step on CUDA
        return torch.optim.AdamW(groups, weight_decay=self.deep.weight_decay, **fused)

    def _logits(self, model: nn.Module, x) -> torch.Tensor:
        if isinstance(x, RawClips):     # uint8 from the loader: converted, resized, normalised here
            x = to_input(x, self.clip, self.device, memory_format=self.memory_format
                         if isinstance(x.data, torch.Tensor) and x.data.dim() == 5 else None)
        else:
            x = [c.to(self.device, non_blocking=True) for c in x] if isinstance(x, list) else \
                x.to(self.device, non_blocking=True)
        if self.autocast:
            with torch.autocast(**self.autocast):
                return forward(model, x).float()
        return forward(model, x).float()

    @torch.no_grad()
    def video_logits(self, model: nn.Module, loader) -> np.ndarray:
        """Mean clip logit of every video of ``loader``'s dataset, in its order."""
        model.eval()
        n = len(loader.dataset.sources)
        total = torch.zeros(n, dtype=torch.float64, device=self.device)     # summed on the device:
        count = torch.zeros(n, dtype=torch.float64, device=self.device)     # one host read at the end
        for x, _, v in loader:
            v = v.to(self.device, non_blocking=True)
            total.index_add_(0, v, self._logits(model, x).double())
            count.index_add_(0, v, torch.ones_like(v, dtype=torch.float64))
        if self.ctx is not None:        # each rank scored its share of the clips
            distributed.all_sum(total, count)
        return (total / count.clamp(min=1)).cpu().numpy()

    def fit(self, train_rows: pl.DataFrame, val_rows: pl.DataFrame, *, seed: int, workdir: Path,
            tag: str, resume: FoldCache | None = None) -> Fit:
        """Train with early stopping; with ``resume``, every finished epoch is kept there as
        ``<tag>.epoch`` and a kept one is continued from (the caller removes it once the
        finished fit is stored: :func:`_fit_or_restore`)."""
        model = build_video_model(self.spec.name, clip=self.clip, weights=self.weights, seed=seed,
                                  **self.params).to(self.device)
        if self.memory_format is not None:      # channels_last_3d: the 5-D weights of the 3D convs
            model = model.to(memory_format=self.memory_format)
        opt = self._optimizer(model)
        step_model = model if self.ctx is None else distributed.wrap(model, self.ctx)
        if self.ctx is not None and self.ctx.rank:     # dropout: each rank its own stream
            torch.manual_seed(seed * 7919 + self.ctx.rank)
        if self.deep.compile and self.device.type == "cuda":
            step_model = torch.compile(step_model)
        train = self._loader(per_track(train_rows), train=True, seed=seed)    # every face track a sample
        val_tracks = per_track(val_rows)
        val = self._loader(val_tracks, train=False, seed=seed)
        y_val = val_rows["label"].to_numpy().astype(float)
        history, best, best_state, best_epoch, bad = [], math.inf, None, 0, 0
        first = 0
        snapshot = self._load_epoch(resume, tag)
        if snapshot is not None:
            model.load_state_dict(snapshot["model"])
            opt.load_state_dict(snapshot["optimizer"])
            history, best, best_epoch, bad = (snapshot["history"], float(snapshot["best"]),
                                              int(snapshot["best_epoch"]), int(snapshot["bad"]))
            best_state = snapshot["best_state"]
            first = int(snapshot["epoch"]) + 1
            set_rng_state(self._own_rng(snapshot), self.device)
            log.info("%s %s: resumed at epoch %d from the resume cache", self.spec.name, tag, first)
        for epoch in range(first, self.deep.epochs):
            start = time.perf_counter()
            train.sampler.set_epoch(epoch)
            model.train()
            steps = len(train)
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)    # no host sync per step
            counted = torch.zeros((), dtype=torch.int64, device=self.device)
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            opt.zero_grad(set_to_none=True)
            for step, (x, y, _) in enumerate(train):
                loss = F.binary_cross_entropy_with_logits(self._logits(step_model, x), y.to(self.device))
                extra = getattr(getattr(model, "module", model), "regularizer", lambda: None)()
                ((loss if extra is None else loss + extra) / self.accumulate).backward()
                ok = torch.isfinite(loss.detach())
                finite &= ok
                loss_sum += torch.where(ok, loss.detach().double(), 0.0)
                counted += ok.long()
                if (step + 1) % self.accumulate == 0 or step + 1 == steps:
                    ok_all = bool(finite) if self.ctx is None else distributed.all_true(finite)
                    if ok_all:       # one read per optimiser step, as GradScaler does (DDP: all agree)
                        opt.step()
                    else:
                        self._skip_step(tag, epoch, step)
                    opt.zero_grad(set_to_none=True)
                    finite.fill_(True)
            if self.ctx is not None:
                distributed.all_sum(loss_sum, counted)
            logits = self._pooled(self.video_logits(model, val), val_tracks, val_rows.height)
            if not np.isfinite(logits).all():
                raise DivergedError(f"{self.spec.name} {tag}: the validation logits are not finite after "
                                    f"epoch {epoch} (the weights diverged): lower train.deep.lr")
            val_loss = float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits),
                                                                torch.from_numpy(y_val)))
            m = binary_metrics(y_val.astype(int), 1 / (1 + np.exp(-logits)))
            n = int(counted)
            history.append({"train_loss": float(loss_sum) / n if n else math.nan, "val_loss": val_loss,
                            "val_roc_auc": m["roc_auc"], "epoch_seconds": time.perf_counter() - start})
            log.info("%s %s epoch %d: train loss %.4f, val loss %.4f, val AUC %.3f", self.spec.name, tag,
                     epoch, history[-1]["train_loss"], val_loss, m["roc_auc"])
            if val_loss < best - 1e-6:
                best, best_epoch, bad = val_loss, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                bad += 1
                if bad >= self.deep.patience:
                    break
            if resume is not None and epoch + 1 < self.deep.epochs:
                states = ([rng_state(self.device)] if self.ctx is None     # every rank's own streams
                          else distributed.gather(rng_state(self.device)))
                if self.main:
                    self._save_epoch(resume, tag, epoch, model, opt, history, best, best_state, best_epoch,
                                     bad, states)
        model.load_state_dict(best_state)
        ckpt = workdir / f"{tag}_best.pt"
        if not self.main:
            return Fit(model, history, best_epoch, ckpt)
        torch.save({"state_dict": best_state, "model": self.spec.name, "clip": self.clip.as_dict(),
                    "params": self.params, "best_epoch": best_epoch, "val_loss": best,
                    "history": history}, ckpt)
        return Fit(model, history, best_epoch, ckpt)

    def _skip_step(self, tag: str, epoch: int, step: int) -> None:
        """A non-finite loss: the optimiser step is skipped and counted; too many stop the model."""
        self.nonfinite += 1
        log.warning("%s %s epoch %d step %d: non-finite loss, optimiser step skipped (%d of at most %d)",
                    self.spec.name, tag, epoch, step, self.nonfinite, self.deep.max_nonfinite)
        if self.nonfinite >= self.deep.max_nonfinite:
            raise DivergedError(f"{self.spec.name} {tag}: the loss was not finite (NaN or inf) in "
                                f"{self.nonfinite} steps, the last at epoch {epoch} step {step}: the model "
                                f"diverged; lower train.deep.lr (now {self.deep.lr:g}) or check its clips")

    def _save_epoch(self, resume: FoldCache, tag: str, epoch: int, model: nn.Module,
                    opt: torch.optim.Optimizer, history, best, best_state, best_epoch, bad,
                    states: list[dict]) -> None:
        buf = io.BytesIO()
        torch.save({"epoch": epoch, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": opt.state_dict(), "history": history, "best": best,
                    "best_state": best_state, "best_epoch": best_epoch, "bad": bad,
                    "rng": states[0], "rng_ranks": states}, buf)
        resume.save_bytes(epoch_tag(tag), buf.getvalue())

    def _own_rng(self, snapshot: dict) -> dict:
        """This rank's random state of a kept epoch (rank 0's where the epoch was kept by another
        number of ranks, or before every rank's state was kept)."""
        states = snapshot.get("rng_ranks") or [snapshot["rng"]]
        rank = self.ctx.rank if self.ctx is not None else 0
        if len(states) != self.world:
            log.warning("%s: the kept epoch holds the random state of %d rank(s), this run has %d: every "
                        "rank continues from rank 0's", self.spec.name, len(states), self.world)
            return states[0]
        return states[rank]

    def _load_epoch(self, resume: FoldCache | None, tag: str) -> dict | None:
        """The kept epoch of ``tag``; a damaged or unreadable one is reported and ignored."""
        data = resume.load_bytes(epoch_tag(tag)) if resume is not None else None
        if data is None:
            return None
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a checked blob torch cannot read: start the fit again
            log.warning("%s %s: ignoring an unreadable epoch checkpoint (%s: %s)", self.spec.name, tag,
                        type(exc).__name__, exc)
            resume.remove(epoch_tag(tag))
            return None

    def _pooled(self, logits: np.ndarray, tracks: pl.DataFrame, n: int) -> np.ndarray:
        """Per video, the ``clip.tracks`` pool (max or mean) of its tracks' logits (``tracks``:
        :func:`per_track` rows of ``n`` videos)."""
        if tracks.height == n:
            return logits
        return pool_tracks(logits, tracks["_video"].to_numpy(), n, self.clip.tracks)[0]

    def predict(self, model: nn.Module, rows: pl.DataFrame) -> np.ndarray:
        """``P(fake)`` of every video of ``rows`` (evaluation clips, mean logit); with face clips,
        each face track is scored and the video's score is their max (``clip.tracks``: or mean)."""
        tracks = per_track(rows)
        logits = self.video_logits(model, self._loader(tracks, train=False, seed=self.seed))
        return 1 / (1 + np.exp(-self._pooled(logits, tracks, rows.height)))


# -- every fold ---------------------------------------------------------------------------------
def resolve_weights(name: str, deep: DeepConfig, params: dict | None = None) -> str | None:
    """``train.deep.weights[name]``: None for "none"/absent, else a local path or a named weight in its
    library's cache (:func:`fvcflow.models.weights.resolve_setting`: not cached or not a file is an
    error before any work)."""
    resolved = resolve_setting(name, deep.weights, params)
    return resolved.label if resolved is not None else None


def weight_params(name: str, weights: str | None, params: dict) -> dict:
    """``params`` with the constructor keywords the weights need first (kept in the saved spec)."""
    return {**resolve(name, weights, params).params, **params} if weights else dict(params)


def weight_tags(name: str, weights: str | None, params: dict | None = None) -> dict[str, str]:
    """MLflow tags of the initial weights: name (or path), library, file and SHA-256."""
    if weights is None:
        return {"fvc.weights": "random"}
    return resolve(name, weights, params).tags()


def prepare_sources(lake: Lake, rows: pl.DataFrame, clip: ClipSpec, cache: ClipCache) -> pl.DataFrame:
    """Decode and cache every video's clips once; videos that cannot be decoded are recorded and left out."""
    bad, failures = [], []
    for row in per_track(rows).to_dicts():          # every face track's clips (training uses them all)
        if row["video_id"] in bad:
            continue
        try:
            cache.load(_source(row), clip)
        except VideoError as exc:
            bad.append(row["video_id"])
            failures.append(failure_row("clips", row["path"], exc.reason, video_id=row["video_id"],
                                        error_type="VideoError"))
    if failures:
        record_failures(lake, failures, stage="clips")
        log.warning("%d videos could not be decoded into clips (index/failures.parquet)", len(bad))
    return rows.filter(~pl.col("video_id").is_in(bad))


def _fill_one(root: str, source: ClipSource, clip: ClipSpec) -> tuple[str, str | None]:
    """On a Dask worker: decode and cache one video's windows; ``(video, reason it failed or None)``."""
    try:
        ClipCache(root).load(source, clip, mmap=False)
    except VideoError as exc:
        return source.video_id, exc.reason
    return source.video_id, None


def fill_clip_cache(lake: Lake, rows: pl.DataFrame, clip: ClipSpec, address: str) -> dict[str, int]:
    """Decode every video's windows into the clip cache on the Dask scheduler at ``address``, in
    parallel, before the GPU phase: training then only reads the cache (:func:`prepare_sources`
    finds every video cached; the ones that fail here are recorded there). Returns the counts."""
    from distributed import Client

    root = lake.cache_dir("clips")
    cache = ClipCache(root)
    sources = [_source(r) for r in per_track(rows).to_dicts()]      # every face track
    todo = [s for s in sources if not cache.path(s, clip).exists()]
    failed = 0
    if todo:
        with Client(address, set_as_default=False) as client:
            futures = client.map(_fill_one, [str(root)] * len(todo), todo, [clip] * len(todo), pure=False)
            failed = sum(reason is not None for _, reason in client.gather(futures))
    return {"videos": rows.height, "decoded": len(todo) - failed, "cached": len(sources) - len(todo),
            "failed": failed}


def fill_clip_caches(lake: Lake, cfg: TrainConfig, splits: pl.DataFrame, names: list[str],
                     address: str) -> dict[str, dict[str, int]]:
    """:func:`fill_clip_cache` for each distinct clip of the deep models ``names`` (with
    ``train.deep.cache``): face clips of every face track for a model whose ``clip.source`` is
    (or resolves to) ``face`` (:func:`with_faces`, as training decides it), frame clips otherwise."""
    if not cfg.deep.cache or not names:
        return {}
    rows = video_rows(lake, cfg, splits)
    done: dict[str, dict[str, int]] = {}
    seen: dict[str, str] = {}
    for name in names:
        clip, model_rows = with_faces(lake, clip_spec(name, cfg.deep.clip.get(name)), rows, quiet=True)
        key = json.dumps(clip.as_dict(), sort_keys=True, default=list)
        if key in seen:
            done[name] = done[seen[key]]
            continue
        seen[key] = name
        done[name] = fill_clip_cache(lake, model_rows, clip, address)
        log.info("%s: clip cache filled on Dask: %s", name, done[name])
    return done


def _pred_frame(rows: pl.DataFrame, p: np.ndarray, fold: int | None, split: str) -> pl.DataFrame:
    return pl.DataFrame({"video_id": rows["video_id"], "group_id": rows["group_id"],
                         "label": rows["label"].cast(pl.Int8),
                         "fold": pl.Series([fold] * rows.height, dtype=pl.Int32),
                         "split": split, "prob_fake": p.astype(float)})


def _fit_or_restore(trainer: Trainer, resume: FoldCache | None, tag: str, fit_rows: pl.DataFrame,
                    val_rows: pl.DataFrame, *, seed: int, workdir: Path) -> Fit:
    """``trainer.fit``, or the fit stored in ``resume`` under ``tag`` by a run that was killed later."""
    stored = resume.load_bytes(tag) if resume is not None else None
    if stored is not None:
        if trainer.main:
            resume.remove(epoch_tag(tag))        # killed after storing the fit, before dropping its epoch
        state = torch.load(io.BytesIO(stored), map_location="cpu", weights_only=True)
        module = build_video_model(trainer.spec.name, clip=trainer.clip, seed=seed, **trainer.params)
        module.load_state_dict(state["state_dict"])
        ckpt = workdir / f"{tag}_best.pt"
        if trainer.main:
            ckpt.write_bytes(stored)
        log.info("%s %s: restored from the resume cache", trainer.spec.name, tag)
        return Fit(module.to(trainer.device), state["history"], int(state["best_epoch"]), ckpt)
    fit = trainer.fit(fit_rows, val_rows, seed=seed, workdir=workdir, tag=tag, resume=resume)
    if resume is not None and trainer.main:
        resume.save_bytes(tag, fit.checkpoint.read_bytes())
        resume.remove(epoch_tag(tag))            # the finished fit replaces its last epoch
    return fit


def resume_cache(lake: Lake, spec: ModelSpec, cfg: TrainConfig, splits: pl.DataFrame,
                 rows: pl.DataFrame | None = None) -> FoldCache:
    """The :class:`FoldCache` of deep model ``spec`` for these settings and these videos."""
    rows = video_rows(lake, cfg, splits) if rows is None else rows
    return FoldCache.for_model(lake, spec.name, cfg, data=table_digest(
        rows["video_id"], rows["content_hash"], rows["label"], rows["fold"].fill_null(-1), rows["is_test"],
        rows["variant"]))


@dataclass
class VideoCV:
    """What :func:`cross_validate_video` returns: plain results, which the ``torch_video`` trainer
    (:mod:`fvcflow.training.fitting.trainers`) turns into a ``ModelResult``."""

    predictions: pl.DataFrame           # video_id, group_id, label, fold, split (oof|test), prob_fake
    fold_metrics: list[dict[str, float]]
    fold_params: list[dict]
    final_params: dict
    model: TrainedVideo                 # the deployable refit on every training row
    fit_seconds: float
    n_train_rows: int
    fold_history: list[list[dict[str, float]]]
    fold_artifacts: list[dict]
    tags: dict[str, str]
    params: dict
    example: np.ndarray
    inner_oof: pl.DataFrame | None = None


def cross_validate_video(lake: Lake, spec: ModelSpec, cfg: TrainConfig, splits: pl.DataFrame, *,
                         resume: bool = False) -> VideoCV:
    """Every outer fold of ``splits``, the test set and the deployable refit of deep model ``spec``.

    With ``resume``, each finished fit (fold, final: its best checkpoint, history and best epoch)
    is kept in :func:`resume_cache` and restored instead of refitted by a rerun with the same
    settings and videos, and the fit under way keeps its last finished epoch there: a killed
    training resumes from its last finished fit and epoch. The trainer clears the cache once the
    result is logged.

    The model holds one device for its whole training (:func:`fvcflow.deep.device.lease_device`,
    events ``device_lease``/``device_release``), given back on success and failure. Out of memory
    and CUDA faults raise :class:`DeviceError`, a diverged loss :class:`DivergedError`. With
    ``train.deep.ddp`` this task is rank 0 of a DDP model on every device it is given
    (:mod:`fvcflow.deep.distributed`): the result has the same shape, tagged ``fvc.ddp_world``.
    """
    deep = cfg.deep
    start = time.perf_counter()
    group = distributed.launched()      # a launcher's rank: its device is cuda:LOCAL_RANK, not leased
    held = contextlib.nullcontext(Lease(None, group.device)) if group is not None else \
        lease_device(deep.device, deep.devices)
    with held as lease:
        emit("device_lease", model=spec.name, index=lease.index, device=str(lease.device))
        try:
            out = _cross_validate(lake, spec, cfg, splits, resume=resume, device=lease.device, start=start)
        finally:
            emit("device_release", model=spec.name, index=lease.index, device=str(lease.device))
    out.tags.update(lease.tags())
    return out


def _architecture(name: str, clip: ClipSpec, params: dict) -> nn.Module:
    """The model's modules without its memory (built on the meta device; on the CPU where a
    constructor needs real tensors)."""
    try:
        with torch.device("meta"):
            return build_video_model(name, clip=clip, seed=0, **params)
    except Exception:  # noqa: BLE001 - a constructor that computes on its tensors
        return build_video_model(name, clip=clip, seed=0, **params)


def resolve_defaults(spec: ModelSpec, clip: ClipSpec, deep: DeepConfig, params: dict, device: torch.device,
                     weights: str | None = None):
    """``deep`` with the batch size, precision and channels-last the user left unset chosen for
    ``device`` (:func:`fvcflow.deep.device.choose_defaults`), and those :class:`Defaults`."""
    if deep.batch_size is not None and deep.precision is not None and deep.channels_last is not None:
        conv3d = False              # everything given: nothing to look at
    else:
        conv3d = any(isinstance(m, nn.Conv3d) for m in _architecture(spec.name, clip, params).modules())
    side = clip.size or 112
    chosen = choose_defaults(describe(device), clip_elements=clip.n_channels * clip.frames * side * side,
                             conv3d=conv3d, batch_size=deep.batch_size, precision=deep.precision,
                             channels_last=deep.channels_last)
    if chosen.chosen:
        log.info("%s: chosen for %s: %s", spec.name, device,
                 ", ".join(f"{k} {getattr(chosen, k)}" for k in chosen.chosen))
    return deep.model_copy(update={"batch_size": chosen.batch_size, "precision": chosen.precision,
                                   "channels_last": chosen.channels_last}), chosen


@dataclass
class _Job:
    """What every rank of one model trains on (rank 0 prepared it): passed to the other ranks."""

    lake_root: str
    spec_name: str
    cfg: TrainConfig
    clip: ClipSpec
    rows: pl.DataFrame
    params: dict
    weights: str | None
    resume: bool
    splits: pl.DataFrame
    settings: TrainConfig               # as the user gave them (the resume cache's key: the trainer
                                        # clears it by these), before the device chose the defaults


def _cross_validate(lake: Lake, spec: ModelSpec, cfg: TrainConfig, splits: pl.DataFrame, *, resume: bool,
                    device: torch.device, start: float) -> VideoCV:
    deep = cfg.deep
    params = dict(cfg.params.get(spec.name, {}))
    weights = resolve_weights(spec.name, deep, params)
    params = weight_params(spec.name, weights, params)
    clip = clip_spec(spec.name, deep.clip.get(spec.name), weights=weights, params=params)
    if weights is None:
        log.warning("%s: no weights given (train.deep.weights): random initialisation", spec.name)
    else:
        log.info("%s: initial weights from %s", spec.name, weights)
    given = cfg
    deep, chosen = resolve_defaults(spec, clip, deep, params, device, weights)
    cfg = cfg.model_copy(update={"deep": deep})
    with device_errors(spec.name, device, deep.batch_size):
        cache = ClipCache(lake.cache_dir("clips") if deep.cache else None)
        clip, rows = with_faces(lake, clip, video_rows(lake, cfg, splits))     # clip.source: face or frame
        rows = prepare_sources(lake, rows, clip, cache)
        job = _Job(str(lake.root), spec.name, cfg, clip, rows, params, weights, resume, splits, given)
        if distributed.launched() is not None:
            out = _launched_rank0(job, device, cache, start)
        elif not deep.ddp:
            out = _folds(job, device, None, cache, start)
        else:
            out = _ddp_rank0(job, device, cache, start)
    out.params.update({k: v for k, v in chosen.params().items() if k != "batch_size"})
    out.tags["fvc.defaults_chosen"] = chosen.params()["defaults_chosen"]
    return out


def _launched_rank0(job: _Job, device: torch.device, cache: ClipCache, start: float) -> VideoCV:
    """Rank 0 of a launcher's group: send the job to the other ranks and train with them."""
    ctx = distributed.launched()
    log.info("%s: DDP on the launcher's %d ranks, %s", job.spec_name, ctx.world,
             distributed.backend_for(device))
    with distributed.launched_model():       # one model at a time on the group
        if device.type == "cuda":            # not leased: the model's own peak, as a lease gives
            torch.cuda.reset_peak_memory_stats(device)
        distributed.send(job)
        try:
            out = _folds(job, device, ctx, cache, start)
        except RuntimeError as exc:          # a collective failed: another rank ended
            if "out of memory" in str(exc).lower() or "CUDA error" in str(exc):
                raise
            raise DeviceError(f"{job.spec_name}: DDP stopped: another rank of the launcher's group failed "
                              f"(rank 0 saw: {_first_line(exc)})") from None
    out.tags["fvc.ddp_world"] = str(ctx.world)
    out.tags["fvc.launcher"] = job.cfg.deep.launcher
    out.params["ddp_world"] = ctx.world
    return out


def follow(ctx: Rank) -> int:
    """Ranks 1 .. of a launcher's group: train every model rank 0 sends, writing nothing, until it
    sends None. A model that fails here fails on rank 0 too (the ranks take the same decisions),
    which reports it; returns how many models this rank trained."""
    done = 0
    while (job := distributed.receive()) is not None:
        try:
            _rank_job(ctx, job)
            done += 1
        except FvcError as exc:
            log.warning("rank %d: %s", ctx.rank, _first_line(exc))
    return done


def _ddp_rank0(job: _Job, device: torch.device, cache: ClipCache, start: float) -> VideoCV:
    """Rank 0 of a DDP model: start the other ranks, train with them, name a rank that failed."""
    deep = job.cfg.deep
    cuda = device.type == "cuda"
    indices = distributed.world_devices(deep.device if not cuda else "cuda", deep.devices, deep.ddp_processes,
                            gpu_count() if cuda else 0)
    if cuda:                            # this task's leased GPU is rank 0's; the others take the rest
        others = [i for i in indices if i != device.index]
        devices = [device] + [torch.device("cuda", i) for i in others][:len(indices) - 1]
    else:
        devices = [device] * len(indices)
    address = f"tcp://127.0.0.1:{distributed.free_port()}"
    log.info("%s: DDP on %d ranks (%s), %s", job.spec_name, len(devices), ", ".join(map(str, devices)),
             distributed.backend_for(device))
    ranks = distributed.start_ranks(_rank_job, devices, address, deep.ddp_timeout, (job,))
    try:
        try:
            ranks.wait_started(deep.ddp_timeout)
            ctx = distributed.join(0, len(devices), device, address, deep.ddp_timeout)
            out = _folds(job, device, ctx, cache, start)
        finally:
            distributed.leave()         # the other ranks' collectives end (gloo at once)
    except FvcError:                    # rank 0's own: every rank takes the same decisions
        ranks.stop()
        raise
    except RuntimeError as exc:         # a collective failed: which rank ended it?
        ranks.stop()
        dead = ranks.failure()
        if dead is None:
            raise
        raise DeviceError(f"{job.spec_name}: DDP stopped: {dead} (rank 0 saw: {_first_line(exc)})") from None
    except BaseException:
        ranks.stop()
        raise
    ranks.stop()
    dead = ranks.failure()
    if dead is not None:
        raise DeviceError(f"{job.spec_name}: DDP stopped: {dead}")
    out.tags["fvc.ddp_world"] = str(len(devices))
    out.params["ddp_world"] = len(devices)
    return out


def _rank_job(ctx: Rank, job: _Job) -> None:
    """Ranks 1 .. world - 1 of a DDP model (a spawned process): the same folds, nothing written."""
    from fvcflow.models import get_model_spec

    cache = ClipCache(Lake.at(job.lake_root).cache_dir("clips") if job.cfg.deep.cache else None)
    with device_errors(job.spec_name, ctx.device, job.cfg.deep.batch_size):
        _folds(job, ctx.device, ctx, cache, time.perf_counter(), spec=get_model_spec(job.spec_name))


def _folds(job: _Job, device: torch.device, ctx: Rank | None, cache: ClipCache, start: float, *,
           spec: ModelSpec | None = None) -> VideoCV:
    from fvcflow.models import get_model_spec

    spec = spec or get_model_spec(job.spec_name)
    lake, cfg, clip, rows, params, weights = (Lake.at(job.lake_root), job.cfg, job.clip, job.rows, job.params,
                                              job.weights)
    deep = cfg.deep
    trainer = Trainer(spec, clip, deep, cache, params=params, weights=weights, seed=cfg.seed, device=device,
                      ctx=ctx)
    store = resume_cache(lake, spec, job.settings, job.splits, rows) if job.resume else None
    lake.cache_dir("checkpoints").mkdir(parents=True, exist_ok=True)
    folder = lake.cache_dir("checkpoints")
    workdir = (Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=folder)) if trainer.main
               else Path(tempfile.gettempdir()))       # other DDP ranks write no checkpoint
    train_all = rows.filter(~pl.col("is_test"))
    folds = sorted(int(f) for f in train_all["fold"].unique().to_list())
    preds, fold_metrics, fold_params, history, artifacts, inner = [], [], [], [], [], []
    nested = wants_inner_oof(cfg)
    for k in folds:
        fit_rows, val_rows = validation_split(train_all.filter(pl.col("fold") != k), deep.val_fraction,
                                              cfg.seed + k)
        fit = _fit_or_restore(trainer, store, f"fold{k}", fit_rows, val_rows, seed=cfg.seed + k,
                              workdir=workdir)
        if nested:  # the ensembles' input: predictions of models that never saw fold k
            def fit_inner(rows, val, seed, tag):
                return _fit_or_restore(trainer, store, tag, rows, val, seed=seed, workdir=workdir)

            inner.append(inner_oof(fit_inner, trainer.predict, train_all.filter(pl.col("fold") != k), k,
                                   cfg, validation_split))
        held = train_all.filter((pl.col("fold") == k) & (pl.col("variant") == ORIGINAL))
        p = trainer.predict(fit.module, held)
        preds.append(_pred_frame(held, p, k, "oof"))
        fold_metrics.append(binary_metrics(held["label"].to_numpy(), p))
        fold_params.append({"best_epoch": fit.best_epoch, "epochs_run": len(fit.history),
                            "n_train_rows": fit_rows.height, "n_val_videos": val_rows.height})
        history.append(fit.history)
        artifacts.append({"checkpoints": fit.checkpoint})
        del fit, p                      # the fold's model leaves the device before the next fit
        release_memory(device)
    fit_rows, val_rows = validation_split(train_all, deep.val_fraction, cfg.seed + len(folds))
    final = _fit_or_restore(trainer, store, "final", fit_rows, val_rows, seed=cfg.seed + len(folds),
                            workdir=workdir)
    test = rows.filter(pl.col("is_test") & (pl.col("variant") == ORIGINAL))
    if test.height:
        preds.append(_pred_frame(test, trainer.predict(final.module, test), None, "test"))
    tags = {**weight_tags(spec.name, weights, params), "fvc.clip": json.dumps(clip.as_dict(), default=list),
            **face_tags(lake, clip), **device_tags(device), **peak_memory(device),
            **({"fvc.nonfinite_steps": str(trainer.nonfinite)} if trainer.nonfinite else {})}
    run_params = {"frames": clip.frames, "clips": clip.clips, "stride": clip.stride, "size": clip.size,
                  "batch_size": deep.batch_size, "precision": deep.precision,
                  "channels_last": deep.channels_last,
                  "effective_batch": deep.batch_size * trainer.world * trainer.accumulate,
                  "epochs": deep.epochs, "patience": deep.patience, "weight_decay": deep.weight_decay,
                  "val_fraction": deep.val_fraction, "device": device.type, "weights": weights or "none",
                  **({"backbone_lr": deep.backbone_lr, "head_lr": deep.head_lr} if weights
                     else {"lr": deep.lr}),
                  **{f"param_{k}": v for k, v in params.items()}}
    side = clip.size or 112
    example = np.zeros((1, clip.n_channels, clip.frames, side, side), np.float32)
    log.info("%s: %d clips decoded, %d reused from the cache", spec.name, cache.decoded, cache.reused)
    model = TrainedVideo(spec.name, final.module.cpu().eval(), clip, params, weights)
    return VideoCV(pl.concat(preds), fold_metrics, fold_params, {"best_epoch": final.best_epoch}, model,
                   time.perf_counter() - start, train_all.height, history, artifacts, tags, run_params,
                   example, pl.concat(inner) if inner else None)
