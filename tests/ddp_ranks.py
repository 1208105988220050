"""What a DDP test runs on each rank: a spawned rank imports this module only (torch and the deep
layer), so that it starts in the time torch takes to import."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from fvcflow.deep.clips import ClipCache
from fvcflow.deep.loop import Trainer
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import clip_spec
from fvcflow.store import Lake

MODEL = "variable_aspect_cnn"                   # GroupNorm: a rank's batch share changes no statistic
PARAMS = {MODEL: {"dropout": 0.0, "widths": [8, 8, 8]}}


def one_fit(ctx, root: str, cfg, rows: pl.DataFrame, val: pl.DataFrame, out: str) -> None:
    """One epoch of ``rows`` on this rank (``ctx`` None: one process); the clip indices it read,
    its weights and its training loss saved as ``<rank>.pt`` in ``out``."""
    clip = clip_spec(MODEL, cfg.deep.clip[MODEL])
    trainer = Trainer(get_model_spec(MODEL), clip, cfg.deep, ClipCache(Lake.at(root).cache_dir("clips")),
                      params=PARAMS[MODEL], weights=None, seed=3, device=torch.device("cpu"), ctx=ctx)
    seen = list(trainer._loader(rows, train=True, seed=3).sampler)
    fit = trainer.fit(rows, val, seed=3, workdir=Path(out), tag="one")
    rank = ctx.rank if ctx is not None else "single"
    torch.save({"seen": torch.tensor(seen), "state": fit.module.state_dict(),
                "loss": torch.tensor(fit.history[0]["train_loss"])}, Path(out) / f"{rank}.pt")
