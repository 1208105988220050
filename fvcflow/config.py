"""The one typed configuration of a pipeline run.

Sources, later ones winning: defaults, a TOML file (``--config`` or ``FVC_CONFIG``), environment
variables (``ENV_VARS``: ``FVC_HOME``, ``FVC_CORPUS_KIND``, ``FVC_CORPUS_ROOT``,
``FVC_CORPUS_LABELS``, ``FVC_DASK_ADDRESS``, ``FVC_WORKERS``, ``FVC_ZIP_PASSWORD``), then explicit
overrides (CLI flags, flow parameters). Everything is validated before any work starts; a bad
value raises :class:`ConfigError` naming the setting.

This module is the only one that reads fvcflow's environment variables or its settings file;
the rest of the library receives values (``tests/test_config.py`` holds every ``os.environ``
read in the code to that).

>>> s = Settings.load(overrides={"corpus": {"kind": "demo"}, "stages": ["ingest", "features"]})
>>> s.stages
['ingest', 'features']
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from fvcflow.errors import ConfigError
from fvcflow.ingest.index import KINDS as ADAPTER_KINDS
from fvcflow.store import Lake
from fvcflow.video.limits import DEFAULT as DEFAULT_LIMITS
from fvcflow.video.limits import FORMATS, Limits

# -- stage 5: training (``train.*``) ---------------------------------------------------------------
# ``TrainConfig``: every setting of stage 5 (splits, cross-validation, models, tracking); a bad value
# raises ConfigError naming the setting (through TrainConfig.make, or Settings which embeds it).

#: the MLflow registered model the best detector becomes a version of (``fvc predict``'s default)
REGISTERED_NAME = "fvc-detector"
#: MLflow alias of the best model of the latest training (``models:/fvc-detector@champion``)
CHAMPION_ALIAS = "champion"


class DeepConfig(BaseModel):
    """Settings of the deep video models (``train.deep.*``): one loop for every torch model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when present")
    launcher: Literal["none", "torchrun", "slurm"] = Field(
        "none", description="join a process group a launcher started (torchrun, srun): one DDP rank per "
                            "process, on cuda:LOCAL_RANK (launch_env reads its variables)")
    devices: list[int] | None = Field(None, description="indices of the visible GPUs the deep tasks lease "
                                                        "one each of (default: all); on the CPU, slots")
    max_nonfinite: int = Field(3, ge=1, le=1000, description="non-finite losses (steps skipped) before a "
                                                             "model is stopped as diverged")
    compile: bool = Field(False, description="torch.compile the model (CUDA; first steps are slower)")
    ddp: bool = Field(False, description="train each deep model on all its devices at once "
                                         "(DistributedDataParallel: NCCL on CUDA, gloo on the CPU)")
    ddp_processes: int | None = Field(None, ge=2, le=64, description="DDP ranks: default one per GPU of "
                                                                     "train.deep.devices (CPU: 2)")
    ddp_timeout: float = Field(600.0, gt=0, le=86400, description="seconds a DDP collective waits for a "
                                                                  "rank before the run fails")
    epochs: int = Field(20, ge=1, le=1000, description="most epochs per fold (early stopping ends sooner)")
    patience: int = Field(5, ge=1, le=100,
                          description="epochs without a better validation loss before stopping")
    batch_size: int | None = Field(None, ge=1, le=1024,
                                   description="clips per step; default chosen for the device (CPU: 8; CUDA: "
                                               "from its free memory, fvcflow.deep.device.choose_defaults)")
    precision: Literal["bf16", "fp32"] | None = Field(
        None, description="autocast precision; default chosen for the device (Ampere+ CUDA: bf16, else fp32)")
    channels_last: bool | None = Field(None, description="channels_last_3d memory format for 3D convs; "
                                                         "default: on CUDA")
    effective_batch: int | None = Field(None, ge=1, le=65536,
                                        description="clips per optimiser step (gradient accumulation); "
                                                    "default batch_size")
    lr: float = Field(1e-4, gt=0, lt=1, description="learning rate from scratch (random weights)")
    backbone_lr: float = Field(5e-6, gt=0, lt=1, description="backbone learning rate with pretrained weights")
    head_lr: float = Field(5e-4, gt=0, lt=1, description="head learning rate with pretrained weights")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="AdamW weight decay")
    val_fraction: float = Field(0.2, gt=0, lt=0.9,
                                description="grouped share of each training set held out for early stopping")
    workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes (0: in the trainer)")
    weights: dict[str, str] = Field(default_factory=dict,
                                    description="per model: 'none' (random init) or a local checkpoint path")
    clip: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per model ClipSpec overrides (frames, clips, stride, size)")
    cache: bool = Field(True, description="cache decoded clips on disk (content-addressed)")
    inner_oof: Literal["auto", "on", "off"] = Field(
        "auto", description="nested inner CV of each deep model's training folds (inner_folds more fits per "
                            "fold), so the ensembles can use it; auto: when a stack model is selected")


class TrainConfig(BaseModel):
    """Settings of the training stage; the defaults suit the demo corpus on 2 cores."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    folds: int = Field(5, ge=2, le=50, description="outer stratified group k-fold")
    test_size: float = Field(0.2, ge=0.0, lt=0.9,
                             description="grouped hold-out test fraction when the corpus has no "
                                         "official test split (0: no hold-out)")
    use_official_split: bool = Field(True, description="rows with split == 'test' form the test set")
    inner_folds: int = Field(3, ge=2, le=10, description="grouped inner CV for the grid and the stack")
    seed: int = Field(0, description="seed of splits and models")
    models: str = Field("*", description="comma-separated fnmatch patterns over registered model names")
    n_jobs: int = Field(1, ge=1, le=256, description="threads a boosting model may use (1 is fastest "
                                                     "on demo-sized tables; raise it for large corpora)")
    corr_threshold: float = Field(0.95, gt=0.0, le=1.0,
                                  description="drop a feature whose |Pearson r| with a kept one exceeds this")
    grids: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="per-model grid replacing the registered one")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model constructor keyword arguments")
    use_augmented: bool = Field(True, description="train on augmented copies (never evaluated on them)")
    experiment: str = Field("fvc", min_length=1, description="MLflow experiment")
    registered_name: str = Field(REGISTERED_NAME, min_length=1, description="MLflow registered model")
    register_best: bool = Field(True, description="register the best model by out-of-fold AUC")
    report: bool = Field(True, description="write stage5/report.html")
    shortcut_check: bool = Field(True, description="cross-validate the best tabular model again on the "
                                                   "codec/container cues alone (report, model card)")
    tracking_uri: str | None = Field(None,
                                     description="MLflow tracking URI; default the work dir's SQLite store")
    reuse_splits: bool = Field(False, description="train on the lake's existing stage5/splits.parquet "
                                                  "(fvc/train-deep) instead of remaking it")
    kinds: list[str] | None = Field(None, description="train only models of these kinds (fvc/train-deep: "
                                                      "['torch_video']); a kind named here is matched by '*'")
    deep: DeepConfig = Field(default_factory=DeepConfig)
    evaluate_on: Path | None = Field(None, description="another labelled corpus's work dir: train here, "
                                                       "report AUC with 95 % intervals there, with and "
                                                       "without pseudo-fakes and tile evidence (issue 22)")

    @field_validator("models")
    @classmethod
    def _patterns(cls, v: str) -> str:
        if not [p for p in v.split(",") if p.strip()]:
            raise ValueError("needs at least one pattern, e.g. '*' or 'logreg_*,xgb_*'")
        return v

    @field_validator("tracking_uri")
    @classmethod
    def _no_file_store(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or "://" not in v):
            raise ValueError("must be a database or server URI (sqlite:///..., http://...); "
                             "the MLflow file store is not used")
        return v

    def patterns(self) -> list[str]:
        """The model name patterns, stripped."""
        return [p.strip() for p in self.models.split(",") if p.strip()]

    @classmethod
    def make(cls, **kw: Any) -> "TrainConfig":
        """Validate keyword settings; a bad one raises ConfigError naming it.

        >>> TrainConfig.make(folds=1)
        Traceback (most recent call last):
        ...
        fvcflow.errors.ConfigError: setting 'train.folds': Input should be greater than or equal to 2 (got 1)
        """
        try:
            return cls(**kw)
        except ValidationError as exc:
            raise ConfigError(describe(exc, cls, prefix=("train",))) from None


#: TrainConfig fields with an ``fvc train`` flag, and how the flag is written
TRAIN_FLAGS = {"models": "--models PATTERNS", "folds": "--folds N", "inner_folds": "--inner-folds N",
               "test_size": "--test-size F", "seed": "--seed N"}


def setting_hint(field: str) -> str:
    """How a user sets ``train.<field>`` from any command: the ``fvc train`` flag where there is one,
    and the settings file (``--config``) always.

    >>> setting_hint("inner_folds")
    'fvc train --inner-folds N, or inner_folds under [train] in the --config file'
    """
    in_file = f"{field} under [train] in the --config file"
    return f"fvc train {TRAIN_FLAGS[field]}, or {in_file}" if field in TRAIN_FLAGS else in_file


# -- the run ------------------------------------------------------------------------------------
#: the pipeline's stages, in order (the one list: flows, specs, CLI and deployments derive theirs)
STAGES = ("ingest", "augment", "faces", "features", "scale", "scaled_features", "train")
Stage = Literal[STAGES]
#: what ``corpus.kind`` may be: an ingest adapter's kind, or the built-in demo corpus
CORPUS_KINDS = (*ADAPTER_KINDS, "demo")
CorpusKind = Literal[CORPUS_KINDS]


#: every environment variable fvcflow reads -> the setting it fills (dotted path; "" for the file)
ENV_VARS = {
    "FVC_CONFIG": "",
    "FVC_HOME": "home",
    "FVC_CORPUS_KIND": "corpus.kind",
    "FVC_CORPUS_ROOT": "corpus.root",
    "FVC_CORPUS_LABELS": "corpus.labels",
    "FVC_DASK_ADDRESS": "dask_address",
    "FVC_WORKERS": "workers",
    "FVC_ZIP_PASSWORD": "zip_password",
    "FVC_ALLOWED_HOMES": "allowed_homes",
    "FVC_SERVED_HOMES": "",   # no setting: set by `fvc serve` for its runs (served_homes, check_home)
    "FVC_APP_TOKEN": "",      # no setting (a secret): fvc app's token when --token is not given (app_token)
    "FVC_SERVE_MAX_BYTES": "",  # no setting: the model server's video_b64 bound (served_model_env)
}
#: the variables of a launcher that started this process as one rank of a group (launch_env)
LAUNCHER_VARS = {
    "torchrun": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"),
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST",
              "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"),
}
#: settings that are secrets: never serialized (a flow run's parameters, logs) nor printed
SECRETS = ("zip_password",)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(_Model):
    """Which corpus to ingest. ``demo`` builds the built-in demo corpus under the work dir."""

    kind: CorpusKind = "demo"
    root: Path | None = Field(None, description="corpus folder, archive folder (fvc) or demo output folder")
    labels: Path | None = Field(None, description="labels CSV (folder corpora)")
    demo_small: bool = Field(False, description="build the small demo corpus (tests, quick looks)")

    @model_validator(mode="after")
    def _needs_root(self) -> "CorpusConfig":
        if self.kind != "demo" and self.root is None:
            raise ValueError(f"corpus.root is required for corpus kind {self.kind!r}")
        if self.kind == "folder" and self.labels is None:
            raise ValueError("corpus.labels (a CSV with path,label[,group]) is required for folder corpora")
        return self


class AugmentConfig(_Model):
    copies: int = Field(10, ge=0, le=100, description="augmented copies per labelled video")
    seed: int = Field(0, description="seed mixed into every per-(video, copy) draw")
    chunk: int = Field(250, ge=1, le=5000, description="frames held in memory at once")
    crf: int = Field(23, ge=0, le=51, description="H.264 quality of the copies")
    self_blend: int = Field(0, ge=0, le=20, description="self-blended pseudo-fakes per real video (labelled "
                                                        "fake, trained on, never evaluated; 0: none)")
    blend_region: Literal["face", "drawn"] = Field(
        "face", description="where a pseudo-fake blends: face: the source's main face track (faces.*), "
                            "the drawn region where it has none; drawn: always the drawn region")


class FeatureConfig(_Model):
    strategy: Literal["auto", "seek", "sequential"] = "auto"
    local: bool = Field(True, description="local (tile) inconsistency features in stages 2 and 4 (s2l)")
    faces: bool = Field(False, description="face-region features in stage 2 (s2lf); offline detector")
    face_model: Path | None = Field(None, description="local ONNX face detector (YuNet); default: "
                                                      "OpenCV's bundled Haar cascade")

    @field_validator("face_model")
    @classmethod
    def _model_file(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"{v} is not a file (a local ONNX face detector, e.g. YuNet's)")
        return v


class FacesConfig(_Model):
    """The face-track stage (``faces.*``; fvcflow/stages/facetrack.py)."""

    detector: Literal["auto", "yuface", "yunet", "haar"] = Field(
        "auto", description="auto: the yuface CNN when installed, else YuNet (features.face_model), "
                            "else Haar")
    every: int = Field(3, ge=1, le=50, description="run the detector on every k-th sampled frame")
    full_every: int = Field(6, ge=1, le=1000,
                            description="search the whole frame on every k-th detection frame (and when a "
                                        "face is lost); between, only a small window about each face; 1: "
                                        "always the whole frame")
    max_tracks: int = Field(2, ge=1, le=16, description="tracks kept per video, longest x largest first")
    max_side: int = Field(640, ge=64, le=4096, description="the detector sees frames downscaled to this side")


class ScaleConfig(_Model):
    """Stage 3 (``scale.*``): letterbox by bilinear resizing, or through a pretrained VAE
    (fvcflow/stages/autoencoder.py)."""

    size: int = Field(256, ge=16, le=4096, description="letterbox side in pixels (even)")
    crf: int = Field(18, ge=0, le=51)
    method: Literal["letterbox", "autoencoder"] = Field(
        "letterbox", description="letterbox: resize each frame (area/bicubic); autoencoder: encode the frame "
                                 "with a VAE, resize its latent, decode at the letterbox size")
    weights: str = Field("hf:stabilityai/sd-vae-ft-mse",
                         description="the autoencoder's weights: hf:<repository id>[/<subfolder>] from the "
                                     "Hugging Face cache (`fvc weights pull autoencoder`), or a local "
                                     "diffusers folder (config.json and diffusion_pytorch_model.safetensors)")
    tile: int = Field(512, ge=16, le=4096, description="the autoencoder sees tiles of at most this side "
                                                       "(pixels; overlapping, blended), so memory is bounded")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="the autoencoder's device; auto: "
                                                                      "CUDA when present")

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 needs even frame sizes)")
        return v


class LimitsConfig(_Model):
    """What one video may cost (``limits.*``; fvcflow.video.limits): a video over a bound is one
    failure row naming it, the batch goes on. The defaults admit 8K and hours of video."""

    max_pixels: int = Field(DEFAULT_LIMITS.max_pixels, ge=64, le=2**31,
                            description="pixels per frame (default 8192x4320)")
    max_frames: int = Field(DEFAULT_LIMITS.max_frames, ge=1, description="frames per video")
    max_duration_s: float = Field(DEFAULT_LIMITS.max_duration_s, gt=0, description="seconds of video")
    decode_seconds: float | None = Field(DEFAULT_LIMITS.decode_seconds, gt=0,
                                         description="the watchdog: seconds one video may be read for "
                                                     "in one stage (None: no watchdog)")
    chunk_mb: float = Field(DEFAULT_LIMITS.chunk_mb, ge=1, le=65536,
                            description="MiB of decoded RGB frames held at once (stages 3, predict)")
    formats: list[str] = Field(default_factory=lambda: list(FORMATS),
                               description="FFmpeg demuxers a video may be read with (no playlists)")

    @field_validator("formats")
    @classmethod
    def _no_playlists(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f in ("hls", "applehttp", "dash", "concat", "image2", "data", "tee")]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a playlist, list or image sequence may not be allowed")
        if not v:
            raise ValueError("needs at least one format, e.g. ['mov', 'matroska']")
        return v

    def video_limits(self) -> Limits:
        """These bounds as the video layer takes them (:func:`fvcflow.video.limits.bounded`)."""
        return Limits(max_pixels=self.max_pixels, max_frames=self.max_frames,
                      max_duration_s=self.max_duration_s, decode_seconds=self.decode_seconds,
                      chunk_mb=self.chunk_mb, formats=tuple(self.formats))


class Settings(_Model):
    """Everything a pipeline run needs; the flow's only parameter."""

    home: Path | None = Field(None, description="work directory ($FVC_HOME; default ./fvc-data)")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    stages: list[Stage] = Field(default_factory=lambda: list(STAGES))
    force: list[Stage] = Field(default_factory=list, description="stages to recompute ignoring the cache")
    retry_failed: bool = Field(False, description="try again the videos a stage failed on in an earlier run "
                               "(else a video's own failure stands while its file is unchanged)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dask_address: str | None = Field(None, description="tcp://host:port of an existing Dask scheduler")
    workers: int | None = Field(None, ge=1, le=1024, description="Dask worker processes (default: cores)")
    threads_per_worker: int = Field(1, ge=1, le=64, description="Dask threads per worker; also each "
                                    "worker's Numba, BLAS and video-decoder threads")
    allowed_homes: list[Path] = Field(default_factory=list, exclude=True,
                                      description="work dirs a run of a served deployment may use besides "
                                                  "the served one ($FVC_ALLOWED_HOMES, separated by "
                                                  "os.pathsep); read by `fvc serve`, never from a run's "
                                                  "parameters")
    zip_password: SecretStr | None = Field(None, exclude=True, repr=False,
                                           description="the FVC archives' password ($FVC_ZIP_PASSWORD); "
                                                       "never serialized, logged or sent as a parameter")

    @field_validator("stages", "force")
    @classmethod
    def _ordered(cls, v: list[str]) -> list[str]:
        return [s for s in STAGES if s in v]

    @field_validator("allowed_homes", mode="before")
    @classmethod
    def _path_list(cls, v: Any) -> Any:
        return [p for p in v.split(os.pathsep) if p] if isinstance(v, str) else v

    @field_validator("dask_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError("must look like tcp://host:port")
        return v

    # ----------------------------------------------------------------------------------------
    def resolved(self) -> "Settings":
        """A copy whose ``home`` is absolute, so that workers elsewhere agree on the work dir."""
        return self.model_copy(update={"home": Lake.at(self.home).root})

    def lake(self) -> Lake:
        return Lake.at(self.home)

    def password(self) -> bytes | None:
        """The FVC archives' password as bytes, or None."""
        return self.zip_password.get_secret_value().encode() if self.zip_password else None

    def with_process_secrets(self, env: dict[str, str] | None = None) -> "Settings":
        """This copy with the secrets of this process's environment where it has none: a flow
        run's parameters never carry them (a served deployment's run gets them here)."""
        found = _from_env(os.environ if env is None else env)
        missing = {k: found[k] for k in SECRETS if k in found and getattr(self, k) is None}
        return self.model_copy(update={k: SecretStr(v) for k, v in missing.items()}) if missing else self

    def without_secrets(self) -> "Settings":
        """This copy without the secrets: what every task after ingest receives (a video task's
        settings travel pickled to Dask workers, over the network with ``dask_address``)."""
        return self.model_copy(update=dict.fromkeys(SECRETS))

    def served_homes(self) -> list[Path]:
        """The work dirs a run of this process's served deployments may use: its own, then
        ``allowed_homes``, absolute."""
        return [Lake.at(self.home).root, *(Path(os.path.abspath(p)) for p in self.allowed_homes)]

    def n_workers(self) -> int:
        return self.workers or max(1, (os.cpu_count() or 1) // self.threads_per_worker)

    @classmethod
    def load(cls, file: str | os.PathLike | None = None, *, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None) -> "Settings":
        """Merge defaults, a TOML file, ``FVC_*`` environment variables and overrides; validate."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        file = file or env.get("FVC_CONFIG") or None
        if file:
            path = Path(file)
            try:
                data = tomllib.loads(path.read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file {path} does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        merge(data, _from_env(env))
        merge(data, overrides or {})
        return cls.validate_dict(data)

    @classmethod
    def validate_dict(cls, data: dict[str, Any]) -> "Settings":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe(exc, cls, secrets=_secret_values(data))) from None


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[None]:
    """While ``fvc serve`` serves: ``FVC_SERVED_HOMES`` in this process's environment, which the
    flow runs it starts inherit (:func:`check_home` reads it there, not from their parameters)."""
    old = os.environ.get("FVC_SERVED_HOMES")
    os.environ["FVC_SERVED_HOMES"] = os.pathsep.join(str(p) for p in settings.served_homes())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FVC_SERVED_HOMES", None)
        else:
            os.environ["FVC_SERVED_HOMES"] = old


def check_home(settings: Settings, env: dict[str, str] | None = None) -> None:
    """In a run of a served deployment (``FVC_SERVED_HOMES`` set by :func:`serving`), ``home`` must
    be the served work dir or one of the server's ``allowed_homes``: a run's parameters are anyone's
    who reaches the Prefect server, and a work dir holds files the run loads. Elsewhere: nothing.

    Raises
    ------
    ConfigError
        ``home`` is neither.
    """
    served = (os.environ if env is None else env).get("FVC_SERVED_HOMES")
    if not served:
        return
    allowed = [Path(p) for p in served.split(os.pathsep) if p]
    home = Lake.at(settings.home).root
    if os.path.realpath(home) not in {os.path.realpath(p) for p in allowed}:
        raise ConfigError(f"setting 'home': {home} is not the served work dir {allowed[0]}"
                          + (f" nor one of allowed_homes ({', '.join(map(str, allowed[1:]))})"
                             if allowed[1:] else "")
                          + "; the server's allowed_homes setting ($FVC_ALLOWED_HOMES) lists the others")


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    """The settings ``ENV_VARS`` name, as nested overrides (unset and empty variables skipped)."""
    out: dict[str, Any] = {}
    for var, path in ENV_VARS.items():
        if path and env.get(var):
            *parents, leaf = path.split(".")
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = env[var]
    return out


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` (nested dicts key by key), in place; returns ``base``."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


#: the longest value a configuration error shows; a longer one is cut (and its length said)
SHOWN_CHARS = 40


def _secret_values(data: dict) -> list[str]:
    return [str(data[k]) for k in SECRETS if isinstance(data, dict) and data.get(k)]


def _fields(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    """The setting names of the (nested) model at ``path`` below ``model``; [] where it is no model."""
    for name in path:
        field = model.model_fields.get(name)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def _shown(value: Any) -> str:
    """A value as an error shows it: tables never (they may hold anything), long ones cut."""
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


#: settings that older settings files may still name: what replaced them (``describe`` says so)
REMOVED = {"features.face_every": "the face tracker's detection stride is 'faces.every'; set that instead"}


def describe(exc: ValidationError, model: type[BaseModel], *, prefix: tuple[str, ...] = (),
             secrets: list[str] = ()) -> str:
    """One line per bad setting, naming it. A value is never shown for a secret setting, nor for
    an unknown one (a misspelled secret's name is unknown: ``zip_pasword``); others are cut to
    :data:`SHOWN_CHARS`; any value of ``secrets`` left in the text is masked.

    >>> describe(ValidationError.from_exception_data("Settings", [{"type": "extra_forbidden",
    ...     "loc": ("zip_pasword",), "input": "s3cret"}]), Settings)
    "setting 'zip_pasword': not a setting (did you mean 'zip_password'?)"
    """
    parts = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        where = ".".join(prefix + loc) or "settings"
        if err["type"] == "extra_forbidden" and where in REMOVED:
            parts.append(f"setting {where!r}: no longer a setting ({REMOVED[where]})")
        elif err["type"] == "extra_forbidden":
            known = _fields(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1) if loc else []
            hint = f" (did you mean {'.'.join(prefix + loc[:-1] + (close[0],))!r}?)" if close else ""
            parts.append(f"setting {where!r}: not a setting{hint}")
        elif any(p in SECRETS for p in prefix + loc):
            parts.append(f"setting {where!r}: {err['msg']} (the value of a secret is not shown)")
        else:
            parts.append(f"setting {where!r}: {err['msg']} (got {_shown(err.get('input'))})")
    text = "; ".join(parts)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def user_cache(env: Mapping[str, str] | None = None) -> Path:
    """fvcflow's folder in the user's cache: ``$XDG_CACHE_HOME/fvcflow``, else ``~/.cache/fvcflow``
    (what is rebuilt when missing, such as the empty MLflow store: training/tracking/seed.py)."""
    base = (os.environ if env is None else env).get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fvcflow"


def app_token(env: Mapping[str, str] | None = None) -> str | None:
    """``fvc app``'s access token from ``FVC_APP_TOKEN`` (when ``--token`` is not given), or None."""
    return (os.environ if env is None else env).get("FVC_APP_TOKEN") or None


def served_model_env(env: Mapping[str, str] | None = None) -> dict:
    """What MLflow's scoring server process of a logged detector reads from its environment:
    ``max_bytes`` (``FVC_SERVE_MAX_BYTES``, the largest decoded ``video_b64``; default 512 MiB) and
    ``tracking_uri`` (MLflow's own ``MLFLOW_TRACKING_URI``, to name the served version)."""
    env = os.environ if env is None else env
    raw = env.get("FVC_SERVE_MAX_BYTES") or str(512 * 1024 * 1024)
    try:
        max_bytes = int(raw)
    except ValueError:
        raise ConfigError(f"FVC_SERVE_MAX_BYTES = {raw[:20]!r}: not a whole number of bytes") from None
    return {"max_bytes": max_bytes, "tracking_uri": env.get("MLFLOW_TRACKING_URI")}


# -- a launcher's process group (torchrun, srun) -----------------------------------------------------
class LaunchEnv(_Model):
    """This process's place in a group a launcher started: ``rank`` of ``world``, ``local_rank``
    on its node (its GPU: ``cuda:local_rank``), and the rendezvous ``master_addr:master_port``."""

    launcher: str
    rank: int
    world: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def address(self) -> str:
        return f"tcp://{self.master_addr}:{self.master_port}"


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list (the rank 0 node: srun places tasks in its order).

    >>> first_node("gpu[07-09,12],cpu1"), first_node("node3,node4"), first_node("a[1,3]")
    ('gpu07', 'node3', 'a1')
    """
    head = nodelist.strip().split(",")[0]
    if "[" not in head:
        return head
    prefix, _, rest = head.partition("[")
    return prefix + rest.split(",")[0].split("-")[0].rstrip("]")


def launch_env(launcher: str, env: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """The rank, world and rendezvous that ``launcher`` (``train.deep.launcher``: ``torchrun`` or
    ``slurm``) set in the environment; None for ``none``. Missing or inconsistent variables are a
    :class:`ConfigError` of one line naming them (e.g. ``WORLD_SIZE`` without ``RANK``).

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``. srun
    sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the node list; the master is its
    first node, the port ``MASTER_PORT`` or ``15000 + SLURM_JOB_ID % 20000`` (the same on every task).

    >>> e = launch_env("torchrun", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
    ...                             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    >>> (e.rank, e.world, e.local_rank, e.address)
    (1, 2, 1, 'tcp://127.0.0.1:29500')
    >>> launch_env("slurm", {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3",
    ...                      "SLURM_STEP_NODELIST": "gpu[04-05]", "SLURM_JOB_ID": "4242"}).address
    'tcp://gpu04:19242'
    """
    if launcher == "none":
        return None
    env = os.environ if env is None else env
    names = LAUNCHER_VARS.get(launcher)
    if names is None:
        raise ConfigError(f"setting 'train.deep.launcher': must be none, torchrun or slurm "
                          f"(got {launcher!r})")
    if launcher == "torchrun":
        rank_var, world_var, local_var = "RANK", "WORLD_SIZE", "LOCAL_RANK"
        addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
        hint = "run it under torchrun (torchrun --nproc-per-node N -m fvcflow train --launcher torchrun ...)"
    else:
        rank_var, world_var, local_var = "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        addr = env.get("MASTER_ADDR") or (first_node(nodes) if nodes else None)
        job = env.get("SLURM_JOB_ID")
        port = env.get("MASTER_PORT") or (str(15000 + int(job) % 20000) if job and job.isdigit() else None)
        hint = "run it as an srun task (srun --ntasks-per-node N fvc train --launcher slurm ...)"
    raw = {rank_var: env.get(rank_var), world_var: env.get(world_var), local_var: env.get(local_var),
           "the master address (MASTER_ADDR or the node list)": addr,
           "the master port (MASTER_PORT or SLURM_JOB_ID)": port}
    missing = [k for k, v in raw.items() if v in (None, "")]
    if missing:
        present = [k for k in names if env.get(k)]
        raise ConfigError(f"train.deep.launcher = {launcher}: {', '.join(missing)} not set"
                          f"{' (set: ' + ', '.join(present) + ')' if present else ''}: {hint}")
    try:
        rank, world, local, port_n = (int(raw[rank_var]), int(raw[world_var]), int(raw[local_var]), int(port))
    except ValueError:
        raise ConfigError(f"train.deep.launcher = {launcher}: {rank_var}={raw[rank_var]!r}, "
                          f"{world_var}={raw[world_var]!r}, {local_var}={raw[local_var]!r}, port={port!r}: "
                          "whole numbers expected") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local <= rank and 0 < port_n < 65536):
        raise ConfigError(f"train.deep.launcher = {launcher}: inconsistent {rank_var}={rank}, "
                          f"{world_var}={world}, {local_var}={local}, port={port_n} "
                          "(0 <= local rank <= rank < world expected)")
    return LaunchEnv(launcher=launcher, rank=rank, world=world, local_rank=local, master_addr=addr,
                     master_port=port_n)
