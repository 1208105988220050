"""What every deep video model shares: its clip spec, its module shape and local-weight loading.

A deep model is a short constructor registered with :func:`register_video_model`. It returns a
:class:`VideoClassifier`: ``features(x)`` maps a normalised float clip batch ``x`` of shape
``(B, C, T, H, W)`` to embeddings ``(B, D)``; ``forward(x)`` returns ``(B,)`` logits through
``head`` (dropout, then one linear unit). The trainer gives ``head`` its own learning rate when
the backbone is pretrained; the embedding models call ``features``. Models whose library wants
another layout (``(B, T, C, H, W)`` for the transformers, two pathways for SlowFast) convert
inside ``features``, so the clip pipeline always hands over ``(B, C, T, H, W)``.

Weights are data: ``weights=None`` builds random weights (the trainer says so in its log and
MLflow tags); ``weights=PATH`` loads a local checkpoint; a named weight
(``torchvision:KINETICS400_V1``, ``timm:TAG``, ``hf:REPO``, ``pytorchvideo:NAME``,
``open_clip:TAG``: :mod:`fvcflow.models.weights`) is resolved to its file in its library's cache
by :func:`build_video_model`, and its preprocessing goes into the clip spec (:func:`clip_spec`).
Nothing is ever downloaded here (``fvc weights pull`` does).

>>> import torch
>>> spec = ClipSpec(frames=4, clips=2, size=32)
>>> spec.shape(batch=2)
(2, 3, 4, 32, 32)
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from fvcflow.errors import FvcError
from fvcflow.models.registry import register_model
from fvcflow.models.weights import WeightSource, is_named, resolve

#: set while a named weight loads: a tensor of another shape, or one the file lacks, is an error
_STRICT: contextvars.ContextVar[str | None] = contextvars.ContextVar("fvc_strict_weights", default=None)

log = logging.getLogger("fvcflow.models")

#: Kinetics-400 statistics (torchvision's video models)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
#: ImageNet statistics (per-frame 2D backbones)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipSpec:
    """How clips are sampled and normalised for one model.

    ``frames`` (T) consecutive frames taken every ``stride`` frames, ``clips`` (K) such clips
    spaced evenly over the video, resized to ``size`` x ``size`` (``size=None``: frames keep
    their own aspect, for the variable-aspect model). ``channels`` is ``"rgb"`` (3) or
    ``"rgb+flow"`` (5: RGB then optical flow dx, dy). ``flow`` says how the flow of an
    ``"rgb+flow"`` clip is computed (:mod:`fvcflow.deep.flow`): ``"farneback"`` (OpenCV, CPU) or
    ``"raft_small=PATH"`` (torchvision RAFT-small from the local checkpoint PATH). ``source``:
    ``"face"``, crops of the video's face tracks aligned to a 5-point template
    (:func:`fvcflow.deep.clips.decode_face_clips`), ``"frame"``, whole frames, ``"auto"``: face
    when most of the corpus has a face track; ``tracks``: a video's score over its tracks, their
    ``"max"`` (a video is fake when any face in it is) or ``"mean"``.
    """

    frames: int = 16
    clips: int = 4
    stride: int = 1
    size: int | None = 112
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    channels: str = "rgb"
    flow: str = "farneback"
    source: str = "auto"        # "face": aligned face-track crops; "frame": whole frames; auto: face
    tracks: str = "max"         # a video's score over its face tracks: "max" (any face fake) or "mean"

    def __post_init__(self) -> None:
        if self.frames < 1 or self.clips < 1 or self.stride < 1:
            raise ValueError(f"ClipSpec: frames, clips and stride must be >= 1, got {self}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"ClipSpec: size must be >= 8 or None, got {self.size}")
        if self.channels not in ("rgb", "rgb+flow"):
            raise ValueError(f"ClipSpec: channels must be 'rgb' or 'rgb+flow', got {self.channels!r}")
        if self.source not in ("auto", "face", "frame"):
            raise ValueError(f"ClipSpec: source must be 'auto', 'face' or 'frame', got {self.source!r}")
        if self.tracks not in ("max", "mean"):
            raise ValueError(f"ClipSpec: tracks must be 'max' or 'mean', got {self.tracks!r}")
        if self.flow != "farneback" and not self.flow.startswith("raft_small="):
            raise ValueError(f"ClipSpec: flow must be 'farneback' or 'raft_small=PATH', got {self.flow!r}")

    @property
    def n_channels(self) -> int:
        return 3 if self.channels == "rgb" else 5

    def shape(self, batch: int = 1) -> tuple[int, ...]:
        """The input shape ``(B, C, T, H, W)`` a model sees (square ``size``)."""
        side = self.size or 112
        return (batch, self.n_channels, self.frames, side, side)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VideoClassifier(nn.Module):
    """A backbone that embeds a clip batch, then ``head``: dropout and one logit.

    Subclasses either pass a ``backbone`` module mapping ``(B, C, T, H, W)`` to ``(B, dim)`` or
    override :meth:`features`.
    """

    def __init__(self, backbone: nn.Module | None, dim: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dim = int(dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.dim, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)

    def regularizer(self) -> torch.Tensor | None:
        """A term the trainer adds to the loss (``clip_svd``'s orthogonality loss); None: nothing."""
        return None


@contextmanager
def strict_loading(label: str):
    """Inside, :func:`load_local_weights` refuses a checkpoint that does not fit (named weights)."""
    token = _STRICT.set(label)
    try:
        yield
    finally:
        _STRICT.reset(token)


def load_local_weights(module: nn.Module, path: str | Path, *, prefix: str = "",
                       transform: Callable[[dict], dict] | None = None) -> dict[str, list[str]]:
    """Load a local checkpoint into ``module`` (never a download); returns what did not load.

    Accepts a bare state dict or one wrapped under ``state_dict``/``model``/``model_state``
    (torchvision, timm, pytorchvideo and our own checkpoints), or a ``.safetensors`` file (Hugging
    Face and timm); ``prefix`` is stripped from keys
    (``"module."`` of DataParallel checkpoints is always stripped). Shapes that disagree (a
    classifier for 400 classes) are left out and reported as missing (and mismatched). The result
    names the model's ``missing`` keys, the file's ``unexpected`` ones (as the file spells them)
    and the ``mismatched`` ones; the log says how many tensors loaded. A path that does not exist
    or does not hold a state dict is an :class:`FvcError` naming it. ``transform`` maps the
    file's state dict first (timm's ``checkpoint_filter_fn``: position tables resampled).

    Inside :func:`strict_loading` (a named weight) a tensor of another shape, or a parameter of the
    module the file lacks, is an :class:`FvcError` listing them with their shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FvcError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_safetensors(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the user's file
        raise FvcError(f"{path}: not a torch checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FvcError(f"{path}: does not hold a state dict of tensors")
    if transform is not None:
        state = transform(dict(state))
    own = module.state_dict()
    clean: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in state.items():
        name = key.removeprefix("module.").removeprefix(prefix)
        if name not in own:
            unexpected.append(key)                       # as the file names it
        elif own[name].shape != value.shape:
            mismatched.append(name)
        else:
            clean[name] = value
    strict = _STRICT.get()
    if strict is not None:
        absent = [k for k in own if k not in clean and k not in mismatched]
        if mismatched or absent:
            shown = [f"{k} {tuple(state_shape(state, k, prefix))} in the file, {tuple(own[k].shape)} in "
                     "the model" for k in mismatched[:8]] + [f"{k} missing from the file" for k in absent[:8]]
            more = len(mismatched) + len(absent) - len(shown)
            raise FvcError(f"{strict} ({path}): {len(mismatched)} tensors of another shape and {len(absent)} "
                           f"missing: {'; '.join(shown)}{f'; and {more} more' if more > 0 else ''} "
                           "(another architecture or size: check the model's train.params and weights)")
    if not clean:
        raise FvcError(f"{path}: no tensor matches the model's parameters (wrong architecture?)")
    result = module.load_state_dict(clean, strict=False)
    missing = list(result.missing_keys)
    log.info("%s: loaded %d of the model's %d tensors (%d left at their initial values, %d of them "
             "of another shape in the file; %d tensors of the file unused)", path, len(clean), len(own),
             len(missing), len(mismatched), len(unexpected))
    return {"missing": missing, "unexpected": sorted(unexpected), "mismatched": sorted(mismatched)}


def state_shape(state: Mapping[str, torch.Tensor], name: str, prefix: str = "") -> torch.Size:
    """Shape of the file's tensor that loads as ``name`` (keys as :func:`load_local_weights` cleans them)."""
    for key, value in state.items():
        if key.removeprefix("module.").removeprefix(prefix) == name:
            return value.shape
    return torch.Size()


#: the tiny configuration tests and the CPU benchmark use unless a model registers its own
TINY = {"clip": {"frames": 4, "clips": 2, "size": 32}, "params": {}}


def register_video_model(*, clip: ClipSpec, pretrained_lr: bool = True,
                         tiny: Mapping[str, Any] | None = None, weights: WeightSource | None = None,
                         extra: Mapping[str, Any] | None = None) -> Callable:
    """Register a deep video model (kind ``torch_video``, MLflow flavour ``pytorch``).

    The constructor takes ``*, seed=0, weights=None, dropout=0.5`` (plus its own keywords, and
    ``clip`` when its layers depend on the clip size) and returns a :class:`VideoClassifier`.
    ``pretrained_lr``: with weights given, the backbone trains at its own small learning rate.
    ``tiny``: ``{"clip": ClipSpec overrides, "params": constructor keywords}`` of a tiny version
    for CPU tests and benchmarks (default :data:`TINY`: 4 frames, 2 clips, 32 px).
    ``weights``: the library its named weights come from (:class:`WeightSource`; ``fvc weights list``).
    """
    tiny = {"clip": {**TINY["clip"], **dict((tiny or {}).get("clip", {}))},
            "params": dict((tiny or {}).get("params", {}))}
    return register_model(kind="torch_video", mlflow_flavor="pytorch",
                          extra={"clip": clip, "pretrained_lr": pretrained_lr, "tiny": tiny,
                                 "weights": weights, **(extra or {})})


def clip_spec(name: str, overrides: Mapping[str, Any] | None = None, *, weights: str | None = None,
              params: Mapping[str, Any] | None = None) -> ClipSpec:
    """The registered :class:`ClipSpec` of model ``name``, with ``overrides`` (frames, clips, size, ...).

    With a named ``weights`` (not cached: :class:`fvcflow.models.weights.WeightsNotCached`), the
    weights' own preprocessing (mean, std, size and frames where they say) comes between the
    registered spec and ``overrides``: what the user sets wins, then what the weights expect.

    >>> clip_spec("r2plus1d_18", {"frames": 8, "size": 64}).shape(2)
    (2, 3, 8, 64, 64)
    """
    from dataclasses import fields, replace

    from fvcflow.models.registry import get_model_spec

    base = get_model_spec(name).extra["clip"]
    if weights and is_named(weights):
        pre = resolve(name, weights, params).preprocess
        try:
            base = replace(base, **{k: tuple(v) if k in ("mean", "std") else v for k, v in pre.items()})
        except ValueError as exc:
            raise FvcError(f"weights {weights} of {name}: preprocessing {pre}: {exc}") from None
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(ClipSpec)})
    if unknown:
        raise FvcError(f"setting 'train.deep.clip.{name}': unknown keys {', '.join(unknown)} "
                       f"(known: frames, clips, stride, size, mean, std, channels, flow, source, tracks)")
    for key in ("mean", "std"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    try:
        return replace(base, **overrides)
    except ValueError as exc:
        raise FvcError(f"setting 'train.deep.clip.{name}': {exc}") from None


def build_video_model(name: str, *, clip: ClipSpec | None = None, weights: str | None = None,
                      seed: int = 0, **params: Any) -> VideoClassifier:
    """Build registered deep model ``name``: random weights, ``weights`` (a local path) or a named
    weight resolved in its library's cache (not cached: ``WeightsNotCached``; a checkpoint that
    does not fit: an error listing the tensors).

    Constructors that take ``clip`` receive it (their layers depend on the clip size); seeds
    torch first, so the same seed gives the same initial weights.
    """
    import inspect

    from fvcflow.models.registry import get_model_spec

    spec = get_model_spec(name)
    if spec.kind != "torch_video":
        raise FvcError(f"model {name!r} is of kind {spec.kind!r}, not a deep video model")
    if "clip" in inspect.signature(spec.constructor).parameters:
        params["clip"] = clip or spec.extra["clip"]
    torch.manual_seed(seed)
    if weights and is_named(weights):
        resolved = resolve(name, weights, {k: v for k, v in params.items() if k != "clip"})
        params = {**resolved.params, **params}     # keywords the weights need (OpenAI CLIP: quick_gelu)
        with strict_loading(f"weights {weights} of {name}"):
            return spec.constructor(seed=seed, weights=str(resolved.path), **params)
    return spec.constructor(seed=seed, weights=weights, **params)


def tiny_model(name: str, *, seed: int = 0, **params: Any) -> tuple[VideoClassifier, ClipSpec]:
    """The registered tiny version of deep model ``name`` and its clip spec (tests, benchmarks)."""
    from fvcflow.models.registry import get_model_spec

    tiny = get_model_spec(name).extra.get("tiny", TINY)
    clip = clip_spec(name, tiny["clip"])
    return build_video_model(name, clip=clip, seed=seed, **{**tiny["params"], **params}), clip
