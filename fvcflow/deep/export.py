"""A trained deep model as data: its state dict and its spec, logged to MLflow, loaded back.

``spec.json`` names the registered model, its constructor keywords and its :class:`ClipSpec`;
``state_dict.pt`` holds the tensors. Loading rebuilds the module from the registry
(:func:`build_video_model`) and loads the tensors (``torch.load(weights_only=True)``): nothing
of the training run (no pickled module, no globals) is needed. It is logged as a part of the
safe model format (:mod:`fvcflow.saved.format`, a ``video`` part);
:meth:`TrainedVideo.predict_video` scores a video file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fvcflow.models.torch_common import ClipSpec, build_video_model

SPEC_FILE, STATE_FILE = "spec.json", "state_dict.pt"


@dataclass
class TrainedVideo:
    """A fitted deep model with what it needs to score videos."""

    name: str
    module: nn.Module
    clip: ClipSpec
    params: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None              # the initial weights it was trained from (None: random)
    last_track: int | None = field(default=None, repr=False)   # the face track of the last predict_video
    #: the clips of the last predict_video: (face track or None, clip index, logit), in scoring order
    last_clips: list[tuple[int | None, int, float]] = field(default_factory=list, repr=False)

    def spec(self) -> dict[str, Any]:
        return {"model": self.name, "clip": self.clip.as_dict(), "params": self.params,
                "initial_weights": self.weights, "format": 1}

    @torch.no_grad()
    def clip_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        return self.module(x.to(next(self.module.parameters()).device)).float().cpu()

    def predict_video(self, path: str | Path, *, src_width: int | None = None,
                      src_height: int | None = None, original: str | Path | None = None,
                      face_tracker: dict | None = None, tracks=None) -> float:
        """``P(fake)`` of a (letterboxed) video: the mean of its evaluation clips' logits. A model
        trained on face clips (``clip.source == "face"``) tracks the faces of ``original`` (the
        full-resolution file) and scores each track's aligned clips: the video's score is the
        max (or mean: ``clip.tracks``) over its tracks, its frame clips when it has none;
        :attr:`last_track` names the track that drove the score (None: frame clips). The faces
        are tracked with ``face_tracker`` (the ``faces.*`` settings, as the stage tracked them),
        unless ``tracks`` gives the tracks table of ``original`` tracked so already (``fvc predict``'s
        feature decode: the video is not decoded again for them)."""
        from fvcflow.deep.clips import ClipSource, FaceRef, pool_tracks
        from fvcflow.video import probe

        info = probe(path)
        src = ClipSource("predict", str(path), "", info.n_frames, src_width, src_height)
        self.last_track, self.last_clips = None, []
        if self.clip.source == "face" and original is not None:
            import tempfile

            from fvcflow.stages.facetrack import track_as
            from fvcflow.store import write_parquet_atomic

            table = track_as(original, face_tracker)[0] if tracks is None else tracks
            n_tracks = int(table["track"].n_unique()) if table.height else 0
            if n_tracks:
                with tempfile.TemporaryDirectory(prefix="fvc-tracks-") as tmp:
                    tracks = write_parquet_atomic(table, Path(tmp) / "tracks.parquet")
                    logits = [self._logit(ClipSource("predict", str(path), "", info.n_frames, src_width,
                                                     src_height, FaceRef(str(original), "", str(tracks), "",
                                                                         k)), track=k)
                              for k in range(n_tracks)]
                pooled, best = pool_tracks(np.array(logits), np.zeros(len(logits), np.int64), 1,
                                           self.clip.tracks)
                self.last_track = int(best[0])
                return float(1 / (1 + np.exp(-pooled[0])))
        return float(1 / (1 + np.exp(-self._logit(src))))

    def _logit(self, src, track: int | None = None) -> float:
        from fvcflow.deep.clips import clip_offsets, decode_clips, eval_offset
        from fvcflow.deep.data import normalise

        windows = decode_clips(src, self.clip)[:, clip_offsets(self.clip, eval_offset(self.clip))]
        x = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 4, 1, 2, 3).float().div_(255.0)
        x = torch.stack([normalise(c, self.clip) for c in x])
        logits = self.clip_logits(x).reshape(-1)
        self.last_clips += [(track, i, float(v)) for i, v in enumerate(logits)]
        return float(logits.mean())


def save_trained(trained: TrainedVideo, folder: str | Path) -> Path:
    """Write ``spec.json`` and ``state_dict.pt`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(json.dumps(trained.spec(), indent=2, default=list))
    torch.save({k: v.detach().cpu() for k, v in trained.module.state_dict().items()}, folder / STATE_FILE)
    return folder


def load_trained(folder: str | Path, *, device: str = "cpu") -> TrainedVideo:
    """Rebuild a saved model from the registry and load its tensors."""
    folder = Path(folder)
    spec = json.loads((folder / SPEC_FILE).read_text())
    clip = ClipSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["clip"].items()})
    module = build_video_model(spec["model"], clip=clip, **spec["params"])
    module.load_state_dict(torch.load(folder / STATE_FILE, map_location=device, weights_only=True))
    module.eval()
    return TrainedVideo(spec["model"], module.to(device), clip, dict(spec["params"]),
                        spec.get("initial_weights"))
