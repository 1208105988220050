"""``fvc run``: the ``fvc`` flow in this process, without a served deployment.

Prefect records the run in the server named by ``PREFECT_API_URL`` when one is set, else in a
temporary local one whose database lives under the work dir (``<home>/prefect``). A server of the
user's is watched while the run runs (``fvcflow.cli.watch``): once it has not answered for
``watch.GRACE_S`` seconds the run stops as on SIGTERM and says so in one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import urllib.request

from fvcflow import progress
from fvcflow.cli import add_verbose, flow_layer, load_settings, logs
from fvcflow.cli.display import Display
from fvcflow.cli.watch import ServerWatch
from fvcflow.config import CORPUS_KINDS, STAGES, Settings
from fvcflow.errors import FvcError
from fvcflow.interrupt import Stopped, polite_stop
from fvcflow.stages.manifest import Manifest
from fvcflow.stages.specs import SPECS
from fvcflow.store import sweep_temporary


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``fvc run`` and ``fvc serve``; each maps onto one setting (``--config`` and
    ``--home`` are every command's: ``fvcflow.cli.add_common``)."""
    p.add_argument("--corpus", dest="corpus_kind", choices=CORPUS_KINDS)
    p.add_argument("--root", dest="corpus_root", help="corpus folder (or FVC archive folder)")
    p.add_argument("--labels", dest="corpus_labels", help="labels CSV for folder corpora")
    p.add_argument("--small-demo", action="store_true", help="the small demo corpus (quick looks)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--force",
                   help="comma-separated stages to recompute ignoring the cache ('all' for every one)")
    p.add_argument("--retry-failed", action="store_true",
                   help="try again the videos a stage failed on in an earlier run (by default a video's "
                        "own failure stands while its file is unchanged)")
    p.add_argument("--copies", type=int, help="augmented copies per video (stage 1)")
    p.add_argument("--workers", type=int, help="Dask worker processes (default: cores)")
    p.add_argument("--dask-address", help="use an existing Dask scheduler, tcp://host:port")


def settings_from_args(args: argparse.Namespace) -> Settings:
    over: dict = {}
    corpus = {k: getattr(args, f"corpus_{k}") for k in ("kind", "root", "labels")
              if getattr(args, f"corpus_{k}")}
    if args.small_demo:
        corpus["demo_small"] = True
    if corpus:
        over["corpus"] = corpus
    if args.stages:
        over["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.force:
        over["force"] = list(STAGES) if args.force == "all" else [s.strip() for s in args.force.split(",")]
    if getattr(args, "retry_failed", False):
        over["retry_failed"] = True
    if args.copies is not None:
        over["augment"] = {"copies": args.copies}
    if args.workers is not None:
        over["workers"] = args.workers
    if args.dask_address:
        over["dask_address"] = args.dask_address
    return load_settings(args, over)


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.dask_address and any(s in SPECS for s in settings.stages):
        from fvcflow.engine import check_scheduler

        check_scheduler(settings.dask_address)      # before any work: one line when nobody is there
    if "train" in settings.stages:                  # named weights not cached: one line, before any work
        from fvcflow.models import list_models
        from fvcflow.models.weights import check_selected

        t = settings.train
        named = list_models(",".join(p for p in t.patterns() if p != "*") or "-")
        check_selected(named, t.deep.weights, t.params)
    if "scale" in settings.stages and settings.scale.method == "autoencoder":   # the same for stage 3's VAE
        from fvcflow.models.weights import resolve_autoencoder

        resolve_autoencoder(settings.scale.weights)
    verbose = getattr(args, "verbose", False)
    log_file = logs.prepare(settings.home, "run", verbose=verbose)
    display = Display(interactive=False) if verbose else Display()
    logs.route(log_file, verbose=verbose, show=display.note)
    if (done := _from_manifest(args, settings, display, log_file)) is not None:
        return done
    local = flow_layer(args, settings).local      # the Prefect layer, from the entry point
    where: dict[str, str] = {}
    api_url = local.given_api_url()                # a server of the user's (None: a temporary one)

    def track(event: str, fields: dict) -> None:
        if event in ("stage_start", "model_start", "ingest_start"):
            where["at"] = fields.get("stage") or fields.get("model") or "ingest"

    def server_gone(silent: float) -> None:
        local.abandon_api()                        # the way out must not retry the dead API for minutes
        stop.stop(f"the Prefect server at {api_url} has not answered for {silent:.0f} s")

    watching = ServerWatch(api_url, server_gone) if api_url else contextlib.nullcontext()
    try:
        with (polite_stop() as stop, watching as watch, display, progress.listening(display),
              progress.listening(track)):
            if getattr(args, "verify", False):
                from fvcflow.stages.verify import verify

                print(verify(settings).format())
            state = local.run_in_process(settings)
    except Stopped:
        if stop.reason:
            return _server_silent(settings, api_url, watch.lost_after, log_file)
        return _stopped(settings, stop, where.get("at"), log_file)
    except Exception as exc:
        if stop.reason:                            # the stop's way out met the dead API
            return _server_silent(settings, api_url, watch.lost_after, log_file)
        if (lost := _lost_server(api_url, exc)) is None:
            raise
        print(f"error: {lost}; log: {log_file}", file=sys.stderr)
        return 2
    if stop.reason:                                # lost as the run ended: its work may be whole
        return _server_silent(settings, api_url, watch.lost_after, log_file)
    summary = state.result(raise_on_failure=False)
    display.print_summary()
    if not state.is_completed() and (lost := _lost_server(api_url, summary)) is not None:
        print(f"error: {lost}; log: {log_file}", file=sys.stderr)
        return 2
    if isinstance(summary, FvcError):                # a full disk, a lost scheduler ...: one line
        print(f"error: {summary}; log: {log_file}", file=sys.stderr)
        return 2
    if not state.is_completed():
        print(f"flow run ended {state.name}: {state.message or summary}; log: {log_file}")
        return 1
    report = settings.lake().stage5 / "report.html"
    print(f"done; work dir {settings.home}" + (f"; report {report}" if "train" in settings.stages else "")
          + f"; log {log_file}; look with: fvc sql --query leaderboard")
    return 0


def _from_manifest(args: argparse.Namespace, settings: Settings, display: Display, log_file) -> int | None:
    """A run of video stages only, every one of them wholly cached: answered from the manifests
    in this process, with the same summary, without a Prefect server or a Dask cluster (seconds,
    not the half minute of starting them). ``None`` when there is work (or ``--verify``, ingest or
    train is asked for): the flow runs."""
    stages = [s for s in STAGES if s in settings.stages]
    if not stages or getattr(args, "verify", False) or not all(s in SPECS for s in stages):
        return None
    if not settings.lake().index.exists():
        return None                                    # the flow's own error says what to do
    from fvcflow.config import check_home
    from fvcflow.stages import runner

    check_home(settings)

    reports = runner.from_manifest(stages, settings)
    if reports is None:
        return None
    with display, progress.listening(display):
        for report in reports:
            runner.announce(report)
        if not (settings.lake().explore / "explore.html").exists():   # the corpus page, as a run writes it
            from fvcflow.explore import explore

            explore(settings.lake())
    display.print_summary()
    if failed := sum(r.failed for r in reports):
        print(f"{failed} failure(s) of an earlier run stand, not tried again (the files and bounds are "
              "unchanged): see `fvc sql --query failures`; `fvc run --retry-failed` tries them")
    print(f"done; every stage cached (answered from the stage manifests); work dir {settings.home}; "
          f"log {log_file}; look with: fvc sql --query leaderboard")
    return 0


def _lost_server(url: str | None, exc: object) -> str | None:
    """When the run failed because the Prefect server at ``url`` went away, what to tell the user."""
    if not url or isinstance(exc, FvcError):
        return None
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5):
            return None                                   # it answers: the failure is something else
    except (OSError, ValueError):
        pass
    return (f"lost the Prefect server at {url} during the run ({type(exc).__name__}); the work finished "
            "so far is cached: start the server again (or unset PREFECT_API_URL for a temporary one) "
            "and rerun the same command to resume")


def _sweep(settings: Settings) -> str:
    """After a stop: remove what the stopped workers left; what was removed and what is kept."""
    swept = sweep_temporary(settings.home)
    cached = {s: Manifest(settings.lake(), s).count()
              for s in settings.stages if s in SPECS and settings.lake().cache_dir(s).exists()}
    kept = ", ".join(f"{s} {n}" for s, n in cached.items()) or "nothing yet"
    return (f"nothing half-done was published ({len(swept)} unfinished file(s) removed); "
            f"cached results kept: {kept}")


def _server_silent(settings: Settings, url: str, silent: float | None, log_file) -> int:
    """After the watch stopped the run because the server at ``url`` went silent: one line, exit 2."""
    print(f"error: lost the Prefect server at {url} (no answer for {silent or 0:.0f} s); {_sweep(settings)}; "
          "start the server again (or unset PREFECT_API_URL for a temporary one) and rerun the same "
          f"command to resume; log: {log_file}", file=sys.stderr)
    return 2


def _stopped(settings: Settings, stop, at: str | None, log_file) -> int:
    """After a polite stop: sweep what the stopped workers left, say what is kept and how to resume."""
    print(f"stopped by {stop.signal}" + (f" during {at}" if at else "") + f"; {_sweep(settings)}; "
          f"log: {log_file}", file=sys.stderr)
    print(f"to resume, rerun: fvc {shlex.join(sys.argv[1:])}", file=sys.stderr)
    return stop.exit_code


def register(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline flow in this process")
    add_settings_arguments(p)
    p.add_argument("--verify", action="store_true",
                   help="first hash every video the stages wrote (fvc verify); damaged ones are made again")
    add_verbose(p)
    p.set_defaults(func=_run)
