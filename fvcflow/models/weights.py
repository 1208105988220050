"""Pretrained weights by name, resolved through each library's own cache; only ``pull`` downloads.

``train.deep.weights.<model>`` is ``"none"`` (random initialisation), a local checkpoint path,
or a name in the library the model comes from:

- ``torchvision:KINETICS400_V1``: a member of the model's ``*_Weights`` enum, the file
  ``$TORCH_HOME/hub/checkpoints/<file of its url>`` (``torch.hub.get_dir()``);
- ``timm:<pretrained tag>``: the model's timm architecture with that tag; its
  ``pretrained_cfg`` names a Hugging Face repository (``model.safetensors`` or
  ``pytorch_model.bin`` in ``$HF_HOME/hub``) or a URL (the torch hub cache);
- ``hf:<repository id>``: a Hugging Face repository's snapshot in ``$HF_HOME/hub`` (its
  ``config.json`` and ``preprocessor_config.json`` give the frames, size, mean and std);
- ``pytorchvideo:<hub name>``: a PyTorchVideo model-zoo checkpoint (``*.pyth`` in the torch hub
  cache, the URL its ``pytorchvideo.models.hub`` module names);
- ``open_clip:<pretrained tag>``: an open_clip tag of the model's CLIP architecture
  (``open_clip.get_pretrained_cfg``: a Hugging Face repository or a URL, cached in open_clip's
  own cache ``~/.cache/clip``).

Nothing here downloads except :func:`pull` (``fvc weights pull``): a named weight that is not
in its cache is a :class:`WeightsNotCached` error naming the command that fetches it. Each
name carries its preprocessing (:attr:`Resolved.preprocess`: mean, std, size and, where the
weights say so, frames), which :func:`fvcflow.models.torch_common.clip_spec` lays under the
user's ``train.deep.clip`` overrides.

>>> parse_weights("torchvision:KINETICS400_V1")
('torchvision', 'KINETICS400_V1')
>>> parse_weights("/data/r2plus1d.pth") is None
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from fvcflow.errors import FvcError

log = logging.getLogger("fvcflow.models")

#: the libraries a weight may be named in (``<library>:<name>``)
LIBRARIES = ("torchvision", "timm", "hf", "pytorchvideo", "open_clip")
HF_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsNotCached(FvcError):
    """A named weight is not in its library's cache (training and predict never download)."""


@dataclass(frozen=True)
class WeightSource:
    """Where a registered model's named weights come from (``extra["weights"]`` of its spec).

    ``library``: one of :data:`LIBRARIES`. ``ref``: torchvision's ``*_Weights`` enum name, timm's
    architecture, or open_clip's default architecture (the model's ``backbone`` keyword picks
    another). ``names``: names the model knows beyond its library's listing (``hf``
    repositories, ``pytorchvideo`` hub names). ``meta``: per name, preprocessing the library does
    not publish in code (PyTorchVideo's model zoo table: frames, stride, size, mean, std).
    ``prefix``: stripped from checkpoint keys (a full CLIP checkpoint's ``visual.``).
    """

    library: str
    ref: str = ""
    names: tuple[str, ...] = ()
    meta: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise ValueError(f"WeightSource: library must be one of {LIBRARIES}, got {self.library!r}")


@dataclass(frozen=True)
class Where:
    """Where a named weight lives in its library's cache, and how to fetch it (no network here)."""

    library: str
    name: str
    path: Path | None                 # the cached weights file; None when not cached
    expected: str                     # what the cache would hold (for messages)
    url: str                          # where pull downloads from
    preprocess: dict[str, Any]        # mean, std, size, frames, stride the weights expect
    fetch: Callable[[], Path] | None = None   # pull: download into the library's cache, return the file
    expected_sha256: str | None = None        # a digest the library publishes (HF LFS etag, URL prefix)
    params: Mapping[str, Any] = field(default_factory=dict)   # constructor keywords the weights need

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or self.url


@dataclass(frozen=True)
class Resolved:
    """A weight setting resolved to a file: its name (``label``), path, digest and preprocessing."""

    model: str
    label: str                        # the setting as given: "torchvision:KINETICS400_V1" or a path
    library: str                      # one of LIBRARIES, or "path"
    path: Path
    preprocess: dict[str, Any]
    prefix: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)   # e.g. open_clip's quick_gelu for OpenAI's

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    def tags(self) -> dict[str, str]:
        """MLflow tags: the weight's name, its library, file and SHA-256."""
        return {"fvc.weights": self.label, "fvc.weights_library": self.library,
                "fvc.weights_path": str(self.path), "fvc.weights_sha256": self.sha256}


def parse_weights(value: str) -> tuple[str, str] | None:
    """``(library, name)`` of a named weight, None for a local path."""
    head, sep, tail = str(value).partition(":")
    if sep and head in LIBRARIES:
        if not tail.strip():
            raise FvcError(f"weights {value!r}: give a name after '{head}:'")
        return head, tail.strip()
    return None


def is_named(value: str | None) -> bool:
    return bool(value) and parse_weights(str(value)) is not None


# -- digests ------------------------------------------------------------------------------------
_SHA: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's content (memoised per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


def _hf_blob_sha(path: Path) -> str | None:
    """The SHA-256 Hugging Face names an LFS blob by (the cache's ``blobs/<sha256>``)."""
    target = Path(os.path.realpath(path)).name
    return target if re.fullmatch(r"[0-9a-f]{64}", target) else None


# -- the libraries ------------------------------------------------------------------------------
def _source(model: str) -> WeightSource:
    from fvcflow.models.registry import get_model_spec

    spec = get_model_spec(model)
    source = spec.extra.get("weights")
    if source is None:
        raise FvcError(f"model {model!r} has no named weights (give a local checkpoint path or 'none')")
    return source


def _hf_cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def _hf_url(repo: str, filename: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo}/resolve/main/{filename}"


def _hf_fetch(repo: str, files: tuple[str, ...], extra: tuple[str, ...] = ()) -> Callable[[], Path]:
    def fetch() -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        for name in extra:
            try:
                hf_hub_download(repo, name)
            except EntryNotFoundError:
                pass
        for name in files:
            try:
                return Path(hf_hub_download(repo, name))
            except EntryNotFoundError:
                continue
        raise FvcError(f"{_hf_url(repo, '')}: holds none of {', '.join(files)}")
    return fetch


def _hf_where(library: str, name: str, repo: str, files: tuple[str, ...], preprocess: dict,
              extra: tuple[str, ...] = ()) -> Where:
    for filename in files:
        path = _hf_cached(repo, filename)
        if path is not None:
            return Where(library, name, path, f"{repo}/{filename}", _hf_url(repo, filename), preprocess,
                         _hf_fetch(repo, files, extra), _hf_blob_sha(path))
    return Where(library, name, None, f"{repo}/{files[0]} in the Hugging Face cache", _hf_url(repo, files[0]),
                 preprocess, _hf_fetch(repo, files, extra))


def _hub_file(url: str) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _url_where(library: str, name: str, url: str, preprocess: dict, path: Path, *, check_hash: bool) -> Where:
    def fetch() -> Path:
        import torch.hub

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
        return path

    prefix = None
    if check_hash:   # torch hub file names end in the first hex digits of their SHA-256
        m = re.search(r"-([0-9a-f]{8,64})\.", path.name)
        prefix = m.group(1) if m else None
    return Where(library, name, path if path.is_file() else None, str(path), url, preprocess, fetch, prefix)


def _torchvision(source: WeightSource, name: str, params: Mapping) -> Where:
    import torchvision.models as tvm
    import torchvision.models.video as tvv

    enum = getattr(tvv, source.ref, None) or getattr(tvm, source.ref)
    try:
        member = enum[name]
    except KeyError:
        raise FvcError(f"torchvision:{name}: not a member of {source.ref} "
                       f"(known: {', '.join(m.name for m in enum)})") from None
    t = member.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    pre = {"mean": tuple(float(v) for v in t.mean), "std": tuple(float(v) for v in t.std), "size": int(crop)}
    return _url_where("torchvision", name, member.url, pre, _hub_file(member.url), check_hash=True)


def _torchvision_names(source: WeightSource, params: Mapping) -> list[str]:
    import torchvision.models as tvm
    import torchvision.models.video as tvv

    enum = getattr(tvv, source.ref, None) or getattr(tvm, source.ref)
    return [m.name for m in enum]


def _timm_cfg(source: WeightSource, name: str):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{source.ref}.{name}")
    if cfg is None:
        raise FvcError(f"timm:{name}: not a pretrained tag of {source.ref} (known: "
                       f"{', '.join(_timm_names(source, {}))})")
    return cfg


def _timm(source: WeightSource, name: str, params: Mapping) -> Where:
    cfg = _timm_cfg(source, name)
    pre = {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "size": int(cfg.input_size[-1])}
    if cfg.hf_hub_id:
        return _hf_where("timm", name, cfg.hf_hub_id, HF_FILES, pre)
    return _url_where("timm", name, cfg.url, pre, _hub_file(cfg.url), check_hash=False)


def _timm_names(source: WeightSource, params: Mapping) -> list[str]:
    import timm

    return [n.split(".", 1)[1] for n in timm.list_pretrained(f"{source.ref}.*")]


def _hf_preprocess(folder: Path) -> dict[str, Any]:
    """Frames, size, mean and std from a snapshot's ``preprocessor_config.json`` and ``config.json``."""
    pre: dict[str, Any] = {}
    for fname in ("config.json", "preprocessor_config.json"):
        path = folder / fname
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FvcError(f"{path}: not a JSON configuration ({exc})") from None
        if "num_frames" in cfg:
            pre["frames"] = int(cfg["num_frames"])
        if "image_mean" in cfg:
            pre["mean"] = tuple(float(v) for v in cfg["image_mean"])
        if "image_std" in cfg:
            pre["std"] = tuple(float(v) for v in cfg["image_std"])
        if fname == "config.json" and isinstance(cfg.get("image_size"), int):
            pre["size"] = int(cfg["image_size"])
        if fname == "preprocessor_config.json":
            size = cfg.get("crop_size") or cfg.get("size")
            if isinstance(size, Mapping):
                size = size.get("height") or size.get("shortest_edge")
            if isinstance(size, int):
                pre["size"] = size
    return pre


def _hf(source: WeightSource, name: str, params: Mapping) -> Where:
    where = _hf_where("hf", name, name, HF_FILES, {}, extra=("config.json", "preprocessor_config.json"))
    if where.path is None:
        return where
    return Where(where.library, name, where.path, where.expected, where.url,
                 _hf_preprocess(where.path.parent), where.fetch, where.expected_sha256)


def _pytorchvideo_url(name: str) -> str:
    import importlib

    for module in ("resnet", "x3d", "slowfast", "vision_transformers", "r2plus1d", "csn"):
        paths = getattr(importlib.import_module(f"pytorchvideo.models.hub.{module}"), "checkpoint_paths", {})
        if name in paths:
            return paths[name]
    raise FvcError(f"pytorchvideo:{name}: not a PyTorchVideo model-zoo checkpoint")


def _pytorchvideo(source: WeightSource, name: str, params: Mapping) -> Where:
    if name not in source.names:
        raise FvcError(f"pytorchvideo:{name}: this model takes {', '.join(source.names)}")
    url = _pytorchvideo_url(name)
    return _url_where("pytorchvideo", name, url, dict(source.meta.get(name, {})), _hub_file(url),
                      check_hash=False)


def open_clip_arch(source: WeightSource, params: Mapping) -> str:
    return str(params.get("backbone") or source.ref)


def _open_clip_cache() -> Path:
    """open_clip's own cache for URL checkpoints (``download_pretrained_from_url``'s default)."""
    return Path(os.path.expanduser("~/.cache/clip"))


def _open_clip(source: WeightSource, name: str, params: Mapping) -> Where:
    import open_clip

    arch = open_clip_arch(source, params)
    cfg = open_clip.get_pretrained_cfg(arch, name)
    if not cfg:
        raise FvcError(f"open_clip:{name}: not a pretrained tag of {arch} (known: "
                       f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})")
    model_cfg = open_clip.get_model_config(arch) or {}
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    pre = {"mean": tuple(cfg.get("mean", ())), "std": tuple(cfg.get("std", ())),
           "size": int(size if isinstance(size, int) else size[0])}
    pre = {k: v for k, v in pre.items() if v}
    hints = {"quick_gelu": True} if cfg.get("quick_gelu") else {}   # OpenAI's weights: QuickGELU
    hub = cfg.get("hf_hub", "")
    if hub:
        parts = hub.split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        files = (filename,) if filename else OPEN_CLIP_FILES
        w = _hf_where("open_clip", name, repo, files, pre)
        return Where(w.library, name, w.path, w.expected, w.url, pre, w.fetch, w.expected_sha256, hints)
    url = cfg["url"]
    path = _open_clip_cache() / os.path.basename(urlparse(url).path)
    where = _url_where("open_clip", name, url, pre, path, check_hash=False)
    m = re.search(r"/([0-9a-f]{64})/", url)              # OpenAI's URLs carry the file's SHA-256
    return Where(where.library, name, where.path, where.expected, url, pre, where.fetch,
                 m.group(1) if m else None, hints)


def _open_clip_names(source: WeightSource, params: Mapping) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(open_clip_arch(source, params)))


_LOCATE = {"torchvision": _torchvision, "timm": _timm, "hf": _hf, "pytorchvideo": _pytorchvideo,
           "open_clip": _open_clip}
_NAMES = {"torchvision": _torchvision_names, "timm": _timm_names,
          "hf": lambda s, p: list(s.names), "pytorchvideo": lambda s, p: list(s.names),
          "open_clip": _open_clip_names}


def known_weights(model: str, params: Mapping | None = None) -> list[str]:
    """Every named weight model ``model`` knows, as settings values (``"torchvision:KINETICS400_V1"``)."""
    source = _source(model)
    return [f"{source.library}:{n}" for n in _NAMES[source.library](source, params or {})]


def locate(model: str, value: str, params: Mapping | None = None) -> Where:
    """Where named weight ``value`` of ``model`` lives in its library's cache (no network)."""
    parsed = parse_weights(value)
    if parsed is None:
        raise FvcError(f"{value!r} is not a named weight (library:name)")
    if model == AUTOENCODER:
        return locate_autoencoder(value)
    library, name = parsed
    source = _source(model)
    if library != source.library:
        raise FvcError(f"setting 'train.deep.weights.{model}': {value}: {model} takes {source.library}: "
                       f"weights (`fvc weights list {model}`)")
    return _LOCATE[library](source, name, params or {})


def pull_command(model: str, value: str) -> str:
    return f"fvc weights pull {model}={value}"


def resolve(model: str, value: str, params: Mapping | None = None) -> Resolved:
    """The file of ``train.deep.weights.<model>`` = ``value``: a named weight from its cache, or a path.

    A named weight that is not cached is :class:`WeightsNotCached`, naming the ``fvc weights
    pull`` command; a path that is not a file is an :class:`FvcError`. Never downloads.
    """
    if not is_named(value):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FvcError(f"setting 'train.deep.weights.{model}': {value} is not a file (give a local "
                           "checkpoint path, a named weight (`fvc weights list`) or 'none')")
        return Resolved(model, str(value), "path", path, {})
    where = locate(model, value, params)
    if where.path is None:
        raise WeightsNotCached(f"setting 'train.deep.weights.{model}': {value} is not in the {where.library} "
                               f"cache ({where.expected}); run `{pull_command(model, value)}` first "
                               "(training and predict never download)")
    source = _source(model)
    return Resolved(model, value, where.library, where.path, dict(where.preprocess), source.prefix,
                    dict(where.params))


def resolve_setting(model: str, weights: Mapping[str, str], params: Mapping | None = None) -> Resolved | None:
    """``train.deep.weights[model]`` resolved (None for absent or ``"none"``)."""
    value = str(weights.get(model, "none"))
    if value.strip().lower() in ("", "none"):
        return None
    return resolve(model, value.strip(), params)


# -- listing and pulling ------------------------------------------------------------------------
def listing(models: list[str] | None = None, params: Mapping[str, Mapping] | None = None,
            autoencoder: str | None = None) -> list[dict]:
    """One row per (model, named weight): cached?, path, SHA-256 and size of the cached file.
    Stage 3's VAE is the model :data:`AUTOENCODER` (``autoencoder``: the known VAEs and
    ``autoencoder``, the one ``scale.weights`` names, when it is a named one)."""
    from fvcflow.models.registry import get_model_spec, list_models

    params = params or {}
    rows = []
    for model in models or [*list_models(kind="torch_video"), AUTOENCODER]:
        if model == AUTOENCODER:
            values = [f"hf:{n}" for n in AUTOENCODER_NAMES]
            if is_named(autoencoder) and autoencoder not in values:
                values.append(str(autoencoder))
        elif get_model_spec(model).extra.get("weights") is None:
            continue
        else:
            values = known_weights(model, params.get(model))
        for value in values:
            try:
                where = locate(model, value, params.get(model))
            except FvcError as exc:            # a listed name the installed library cannot place
                log.warning("%s", exc)
                continue
            path = where.path
            rows.append({"model": model, "weights": value, "cached": path is not None,
                         "path": str(path) if path else where.expected,
                         "sha256": _digest(where) if path else None,
                         "bytes": path.stat().st_size if path else None})
    return rows


def _digest(where: Where) -> str:
    """A cached file's SHA-256: the Hugging Face blob's name (its LFS SHA-256) or computed."""
    blob = _hf_blob_sha(where.path)
    return blob if blob else sha256_file(where.path)


class NoNetwork(FvcError):
    """``fvc weights pull`` could not reach the host it downloads from."""


def _unreachable(exc: BaseException) -> bool:
    import socket
    import urllib.error

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (urllib.error.URLError, socket.gaierror, ConnectionError, TimeoutError)):
            return True
        name = type(exc).__name__
        if name in ("ConnectError", "ConnectTimeout", "ConnectionError", "LocalEntryNotFoundError",
                    "OfflineModeIsEnabled"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def reach(host: str, port: int, what: str, timeout: float = 10.0) -> None:
    """Fail fast, in one line naming ``host``, when it cannot be reached (no proxy configured):
    the libraries would otherwise retry with back-off for a minute before saying so."""
    import socket
    import urllib.request

    if urllib.request.getproxies():
        return                                   # the library goes through the proxy: let it try
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise NoNetwork(f"{what}: cannot reach {host} ({exc.strerror or type(exc).__name__}); "
                        "connect to the network and rerun") from None


def pull(model: str, value: str, params: Mapping | None = None) -> Resolved | AutoencoderWeights:
    """Download named weight ``value`` of ``model`` into its library's cache and verify it.

    The one function that uses the network. Verification: the SHA-256 the library publishes
    (a Hugging Face LFS file's etag, the digest prefix of a torch hub file name, OpenAI's URL)
    must match the file's; every file must load as a state dict of tensors. A host that cannot
    be reached is :class:`NoNetwork`, naming it.
    """
    where = locate(model, value, params)
    if where.path is None:
        reach(where.host, urlparse(where.url).port or 443, f"fvc weights pull {model}={value}")
        try:
            path = where.fetch()
        except FvcError:
            raise
        except Exception as exc:  # noqa: BLE001 - the libraries raise their own network errors
            if _unreachable(exc):
                raise NoNetwork(f"fvc weights pull {model}={value}: cannot reach {where.host} "
                                f"({type(exc).__name__}); connect to the network and rerun") from None
            raise FvcError(f"fvc weights pull {model}={value}: {where.url}: {type(exc).__name__}: "
                           f"{exc}") from None
        where = locate(model, value, params)
        if where.path is None:
            raise FvcError(f"fvc weights pull {model}={value}: downloaded {path}, but {where.library} "
                           f"does not find it in its cache ({where.expected})")
    verify(where)
    return resolve_autoencoder(value) if model == AUTOENCODER else resolve(model, value, params)


def verify(where: Where) -> str:
    """Check a cached file against the digest its library publishes and that it holds tensors."""
    digest = sha256_file(where.path)
    if where.expected_sha256 and not digest.startswith(where.expected_sha256):
        raise FvcError(f"{where.path}: SHA-256 {digest[:16]}... does not match the published "
                       f"{where.expected_sha256[:16]}...; remove the file and pull again")
    _check_state_dict(where.path)
    return digest


def _check_state_dict(path: Path) -> None:
    import torch
    from safetensors import safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as fh:
                if not list(fh.keys()):
                    raise ValueError("no tensors")
            return
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint
        raise FvcError(f"{path}: not a checkpoint of tensors ({type(exc).__name__}: {exc}); remove it "
                       "and pull again") from None
    if not isinstance(state, Mapping):
        raise FvcError(f"{path}: does not hold a state dict")


def check_selected(models: list[str], weights: Mapping[str, str],
                   params: Mapping[str, Mapping] | None = None) -> list[Resolved]:
    """Resolve the initial weights of every selected deep model (an embedding model's backbone too)
    before any work: a named weight not in its cache stops the run here, naming the pull command."""
    from fvcflow.models.registry import get_model_spec

    params, out = params or {}, []
    for name in models:
        spec = get_model_spec(name)
        target = spec.extra.get("backbone", name) if spec.kind == "embedding" else name
        if get_model_spec(target).kind == "torch_video":
            resolved = resolve_setting(target, weights, params.get(target))
            if resolved is not None:
                out.append(resolved)
    return out


# -- stage 3's autoencoder (scale.method = "autoencoder") -----------------------------------------
#: the name ``fvc weights`` gives stage 3's VAE (its setting: ``scale.weights``)
AUTOENCODER = "autoencoder"
#: the VAEs ``fvc weights list`` shows (any ``hf:`` repository with a diffusers AutoencoderKL works)
AUTOENCODER_NAMES = ("stabilityai/sd-vae-ft-mse", "stabilityai/sd-vae-ft-ema", "stabilityai/sdxl-vae")
VAE_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class AutoencoderWeights:
    """Stage 3's VAE resolved to a diffusers folder: its ``config.json`` and weights file."""

    label: str                        # the setting as given: "hf:stabilityai/sd-vae-ft-mse" or a folder
    library: str                      # "hf" or "path"
    config: Path
    path: Path                        # the weights file

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @property
    def identity(self) -> str:
        """What the weights are, for stage 3's cache key: the SHA-256 of the configuration and of
        the weights file together (a new file under the same name is another key)."""
        h = hashlib.sha256(self.config.read_bytes())
        h.update(self.sha256.encode())
        return h.hexdigest()


def _hf_repo(name: str) -> tuple[str, str]:
    """``owner/name[/subfolder]`` -> (repository id, the files' prefix)."""
    parts = [p for p in name.split("/") if p]
    if len(parts) < 2:
        raise FvcError(f"hf:{name}: give a Hugging Face repository id (owner/name[/subfolder])")
    return "/".join(parts[:2]), "".join(f"{p}/" for p in parts[2:])


def locate_autoencoder(value: str) -> Where:
    """Where named VAE ``value`` (``hf:<repository id>[/<subfolder>]``) lives in the Hugging Face
    cache (no network)."""
    parsed = parse_weights(value)
    if parsed is None or parsed[0] != "hf":
        raise FvcError(f"setting 'scale.weights': {value}: the autoencoder takes hf:<repository id> or a "
                       "local diffusers folder")
    repo, sub = _hf_repo(parsed[1])
    where = _hf_where("hf", parsed[1], repo, tuple(sub + f for f in VAE_FILES), {},
                      extra=(f"{sub}config.json",))
    if where.path is not None and _hf_cached(repo, f"{sub}config.json") is None:
        where = Where(where.library, where.name, None, f"{repo}/{sub}config.json in the Hugging Face cache",
                      where.url, {}, where.fetch)
    return where


def resolve_autoencoder(value: str) -> AutoencoderWeights:
    """``scale.weights`` resolved: a named VAE from the Hugging Face cache, or a local folder.

    Never downloads: a named VAE not in the cache is :class:`WeightsNotCached`, naming the
    ``fvc weights pull`` command; a folder without ``config.json`` or a weights file is an
    :class:`FvcError` naming what is missing.
    """
    value = str(value).strip()
    if not is_named(value):
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise FvcError(f"setting 'scale.weights': {value} is not a folder (give hf:<repository id> or a "
                           "local diffusers folder with config.json and diffusion_pytorch_model.safetensors)")
        files = [folder / f for f in VAE_FILES if (folder / f).is_file()]
        if not (folder / "config.json").is_file() or not files:
            missing = "config.json" if not (folder / "config.json").is_file() else " or ".join(VAE_FILES)
            raise FvcError(f"setting 'scale.weights': {folder} holds no {missing} (a diffusers "
                           "AutoencoderKL folder, as `AutoencoderKL.save_pretrained` writes it)")
        return AutoencoderWeights(value, "path", folder / "config.json", files[0])
    where = locate_autoencoder(value)
    if where.path is None:
        raise WeightsNotCached(f"setting 'scale.weights': {value} is not in the hf cache ({where.expected}); "
                               f"run `{pull_command(AUTOENCODER, value)}` first (stage 3 never downloads)")
    return AutoencoderWeights(value, "hf", where.path.parent / "config.json", where.path)
