"""``fvc train [--models PATTERN] [--folds K] [--launcher torchrun|slurm]``: train, evaluate and
register the detectors; under ``torchrun``/``srun`` with ``--launcher``, every process is one DDP
rank of each deep model (rank 0 trains and writes, the others follow it)."""

from __future__ import annotations

from pathlib import Path

from fvcflow import progress
from fvcflow.cli import add_verbose, logs
from fvcflow.cli.display import Display
from fvcflow.config import TrainConfig, launch_env
from fvcflow.errors import DeviceError


def register(sub) -> None:
    """Add the ``train`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("train", help="cross-validate the models on the lake's features, register the best",
                       description="Leakage-free grouped CV of the registered models on the stage 2/4 "
                                   "features, hold-out test, MLflow tracking, stage5/ tables and report.")
    p.add_argument("--models", default=None, help="comma-separated patterns over model names (default: all)")
    p.add_argument("--folds", type=int, default=None, help="outer folds (default 5)")
    p.add_argument("--inner-folds", type=int, default=None,
                   help="grouped inner folds of the grid search and the stack (default 3)")
    p.add_argument("--test-size", type=float, default=None,
                   help="grouped hold-out fraction when the corpus has no official test split "
                        "(default 0.2; 0: none)")
    p.add_argument("--seed", type=int, default=None, help="seed of splits and models (default 0)")
    p.add_argument("--no-register", action="store_true", help="do not register the best model")
    p.add_argument("--launcher", choices=("none", "torchrun", "slurm"), default=None,
                   help="this process is one rank of a group that torchrun or srun started: each deep "
                        "model trains with DDP on every rank (train.deep.launcher; rank 0 writes)")
    p.add_argument("--evaluate-on", default=None, metavar="WORK_DIR",
                   help="another labelled corpus's work dir (ingested there): its features are made with "
                        "these settings, then the AUC of models trained here is reported on it, with and "
                        "without pseudo-fakes and tile evidence (train.evaluate_on)")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    add_verbose(p)
    p.set_defaults(func=run)


def _list() -> int:
    from fvcflow.models import get_model_spec, list_models

    for name in list_models():
        s = get_model_spec(name)
        print(f"{name:16s} {s.kind:12s} {s.feature_set or s.input:6s} {s.doc}")
    return 0


def run(args) -> int:
    if args.list:
        return _list()
    overrides = {k: v for k, v in {"models": args.models, "folds": args.folds, "seed": args.seed,
                                   "test_size": args.test_size, "inner_folds": args.inner_folds}.items()
                 if v is not None}
    if args.no_register:
        overrides["register_best"] = False
    if args.launcher is not None:
        overrides["deep"] = {**args.settings.train.deep.model_dump(), "launcher": args.launcher}
    if args.evaluate_on:
        overrides["evaluate_on"] = Path(args.evaluate_on)
    settings = args.settings                 # loaded and validated once, by fvcflow.cli.main
    if overrides:                            # the flags, validated like the settings they set
        settings = settings.model_copy(update={"train": TrainConfig.make(
            **{**settings.train.model_dump(), **overrides})})
    env = launch_env(settings.train.deep.launcher)     # the launcher's variables, checked first
    if env is None:
        return _train(args, settings)
    from fvcflow.deep import distributed
    from fvcflow.deep.device import choose_device

    deep = settings.train.deep
    ctx = distributed.join_launched(env, deep.ddp_timeout, cuda=choose_device(deep.device).type == "cuda")
    try:
        if ctx.rank:                         # the other ranks train what rank 0 sends, write nothing
            from fvcflow.deep.loop import follow

            try:
                follow(ctx)
            except RuntimeError as exc:      # a collective failed: another rank (rank 0) ended
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise DeviceError(f"rank {ctx.rank} of {ctx.world}: the launcher's group failed "
                                  f"({first})") from None
            return 0
        try:
            return _train(args, settings)
        finally:
            try:
                distributed.send(None)       # the other ranks are done (also when rank 0 failed)
            except RuntimeError:             # a rank is gone: the launcher ends the others
                pass
    finally:
        distributed.leave_launched()


def _train(args, settings) -> int:
    lake = settings.lake()
    verbose = getattr(args, "verbose", False)
    log_file = logs.prepare(lake.root, "train", verbose=verbose)
    from fvcflow.training import run_training  # imports MLflow: after its logging is routed

    display = Display(interactive=False) if verbose else Display()
    logs.route(log_file, verbose=verbose, show=display.note)
    with display, progress.listening(display):
        if settings.train.evaluate_on:       # the other corpus through the same stage, same settings
            from fvcflow.stages import runner

            runner.run_local("features", settings.model_copy(update={"home": settings.train.evaluate_on}))
        summary = run_training(lake, settings.train)
    display.print_summary()
    print(summary.markdown())
    print(f"log: {log_file}")
    return 0
