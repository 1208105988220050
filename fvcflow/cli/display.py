"""What ``fvc run``, ``fvc train`` and ``fvc ingest`` show: live progress lines and a summary table.

The display is a :mod:`fvcflow.progress` sink: it moves only when the library reports finished
work (a batch back from a Dask worker, a training fold, a probed video). On a terminal it draws
one live line per stage and per model (rich); anywhere else (CI, a pipe, a file) it prints plain
lines, at most one per stage every ``interval`` seconds, plus each stage's start and end. At the
end it prints one table: stage, videos, cached, failed, seconds, and the result (the best model
and its out-of-fold AUC for training). Notes a user can act on are printed once each.
Progress and notes go to stderr, the table to stdout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

#: batches of a stage reported before its rate counts: the first ones carry the kernels' compilation
#: and the workers' start (``31/400 videos ... ETA 5:31`` for a stage done in 37 s)
WARMUP_BATCHES = 2


@dataclass
class _Line:
    """One stage's (or model's) counts as the events report them."""

    name: str
    total: int = 0
    cached: int = 0
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    last_print: float = 0.0
    task: TaskID | None = None
    batches: int = 0                       # batches reported so far
    mark: tuple[float, int] | None = None  # (time, videos computed) when the warm-up batches were back

    @property
    def finished(self) -> int:
        return self.cached + self.done + self.failed

    def batch(self, done: int, failed: int, *, warmup: int = WARMUP_BATCHES) -> None:
        """Count a batch back from a worker; the rate is measured from the end of the warm-up
        batches on (the first batches carry the kernels' compilation and the workers' start)."""
        self.done += done
        self.failed += failed
        self.batches += 1
        if self.batches == warmup:
            self.mark = (time.monotonic(), self.done + self.failed)

    def rate(self) -> float:
        """Videos computed per second (cached ones cost nothing): since the warm-up batches when
        there were more after them, else since the stage started."""
        now = time.monotonic()
        if self.mark is not None and self.done + self.failed > self.mark[1] and now > self.mark[0]:
            return (self.done + self.failed - self.mark[1]) / (now - self.mark[0])
        elapsed = now - self.started
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    def measured(self) -> bool:
        """Whether the rate has been measured past the warm-up batches (an ETA may be shown)."""
        return self.mark is not None and self.done + self.failed > self.mark[1]

    def eta(self) -> str:
        left, rate = self.total - self.finished, self.rate()
        if left <= 0:
            return "0:00"
        if rate <= 0 or not self.measured():
            return "?"
        s = int(left / rate)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=160)


def _auc(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None or value != value:  # None or NaN
        return "AUC n/a"
    text = f"AUC {value:.3f}"
    known = low is not None and high is not None and low == low and high == high
    return text + (f" [{low:.3f}, {high:.3f}]" if known else "")


class Display:
    """A progress sink: ``with Display() as d, progress.listening(d): ...``; then ``d.rows``.

    ``rows`` (one dict per finished stage: stage, videos, cached, failed, seconds, digest, result) is
    what the summary table prints; ``digest`` is the content digest of the table the stage
    published (:mod:`fvcflow.digest`; the train row's is the predictions'): two machines' or two
    work dirs' summaries compare in one line.
    """

    def __init__(self, console: Console | None = None, *, interactive: bool | None = None,
                 interval: float = 10.0, out: Console | None = None):
        # progress goes to stderr, the summary table (a result) to stdout; a pipe or a file gets
        # wide lines instead of wrapping at 80 columns
        self.console = console or _console(stderr=True)
        self.out = out or (console if console is not None else _console(stderr=False))
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self.interval = interval
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._lines: dict[str, _Line] = {}
        self._models: list[str] = []
        self._folds = 0
        self._train: _Line | None = None
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=28),
                                  TextColumn("{task.fields[status]}"), console=self.console,
                                  auto_refresh=False)
        self._live: Live | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "Display":
        if self.interactive:
            self._live = Live(self._progress, console=self.console, refresh_per_second=4,
                              redirect_stdout=True, redirect_stderr=True, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(*exc)
            self._live = None

    def note(self, text: str) -> None:
        """Show ``text`` (something a user can act on) once."""
        self._on_note(text)

    def say(self, text: str) -> None:
        """Print a line above the live lines (or plainly)."""
        self.console.print(text, markup=False, highlight=False)

    # -- the sink ---------------------------------------------------------------------------
    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(**fields)
            if self._live is not None:
                self._live.refresh()

    def _start(self, key: str, label: str, total: int, cached: int = 0) -> _Line:
        line = _Line(label, total=total, cached=cached)
        self._lines[key] = line
        if self.interactive:
            line.task = self._progress.add_task(f"{label:<16}", total=max(total, 1), completed=cached,
                                                status=self._status(line))
        return line

    def _status(self, line: _Line) -> str:
        parts = [f"{line.finished}/{line.total} videos"]
        if line.cached:
            parts.append(f"{line.cached} cached")
        if line.failed:
            parts.append(f"{line.failed} failed")
        if line.measured():
            parts += [f"{line.rate():.2g} videos/s", f"ETA {line.eta()}"]
        elif line.finished < line.total:
            parts.append("ETA after the first batches")
        return "  ".join(parts)

    def _update(self, line: _Line, *, final: bool = False) -> None:
        if self.interactive and line.task is not None:
            self._progress.update(line.task, completed=line.finished, status=self._status(line))
        elif final or time.monotonic() - line.last_print >= self.interval:
            line.last_print = time.monotonic()
            self.say(f"{line.name}: {self._status(line)}")

    # stages -------------------------------------------------------------------------------
    def _on_stage_start(self, stage: str, total: int, todo: int, cached: int) -> None:
        line = self._start(stage, stage, total, cached)
        if not self.interactive:
            line.last_print = time.monotonic()
            self.say(f"{stage}: {total} videos, {cached} cached, {todo} to compute")

    def _on_stage_batch(self, stage: str, done: int, failed: int) -> None:
        line = self._lines.get(stage)
        if line is not None:
            line.batch(done, failed)
            self._update(line)

    def _on_stage_end(self, stage: str, videos: int, done: int, cached: int, failed: int, seconds: float,
                      reasons: dict[str, int], digest: str = "") -> None:
        line = self._lines.get(stage) or self._start(stage, stage, done + cached + failed, cached)
        line.done, line.cached, line.failed = done, cached, failed
        if self.interactive and line.task is not None:
            status = f"{videos} videos  {cached} cached  {failed} failed  {seconds:.1f} s"
            self._progress.update(line.task, total=max(line.total, 1), completed=line.finished, status=status)
        else:
            self.say(f"{stage}: done, {videos} videos ({done} computed, {cached} cached, {failed} failed) "
                     f"in {seconds:.1f} s")
        self.rows.append({"stage": stage, "videos": videos, "cached": cached, "failed": failed,
                          "seconds": seconds, "digest": digest, "result": ""})
        if failed:
            top = ", ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
            self._on_note(f"{stage}: {failed} videos failed ({top}); all of them: fvc sql --query failures")

    # ingest -------------------------------------------------------------------------------
    def _on_ingest_start(self, source: str, total: int) -> None:
        line = self._start("ingest", "ingest", total)
        if not self.interactive:
            line.last_print = time.monotonic()
            self.say(f"ingest: probing {total} videos of {source}")

    def _on_ingest_step(self, done: int, total: int) -> None:
        line = self._lines.get("ingest")
        if line is not None:
            line.done = done
            self._update(line)

    def _on_ingest_end(self, source: str, found: int, indexed: int, failed: int, seconds: float,
                       digest: str = "") -> None:
        line = self._lines.get("ingest") or self._start("ingest", "ingest", found)
        line.done, line.failed = indexed, failed
        status = f"{indexed} indexed  {failed} failed  {seconds:.1f} s"
        if self.interactive and line.task is not None:
            self._progress.update(line.task, total=max(line.total, 1), completed=line.total, status=status)
        else:
            self.say(f"ingest: done, {found} videos of {source}: {indexed} indexed, {failed} failed "
                     f"in {seconds:.1f} s")
        self.rows.append({"stage": "ingest", "videos": indexed, "cached": 0, "failed": failed,
                          "seconds": seconds, "digest": digest, "result": ""})

    # verify -------------------------------------------------------------------------------
    def _on_verify_start(self, total: int) -> None:
        line = self._start("verify", "verify", total)
        if not self.interactive:
            line.last_print = time.monotonic()
            self.say(f"verify: hashing {total} videos the stages wrote")

    def _on_verify_step(self, done: int, total: int) -> None:
        line = self._lines.get("verify")
        if line is not None:
            line.done = done
            self._update(line)

    def _on_verify_end(self, videos: int, damaged: int, missing: int, seconds: float) -> None:
        line = self._lines.get("verify")
        if line is not None and self.interactive and line.task is not None:
            self._progress.update(line.task, completed=line.total,
                                  status=f"{videos} read  {damaged} damaged  {missing} missing  "
                                         f"{seconds:.1f} s")

    # training -----------------------------------------------------------------------------
    def _on_train_start(self, models: list[str], folds: int) -> None:
        self._models, self._folds = list(models), folds
        self._train = _Line("train", total=len(models))
        if not self.interactive:
            self.say(f"train: {len(models)} models, {folds} folds each: {', '.join(models)}")

    def _on_model_start(self, model: str) -> None:
        k = self._models.index(model) + 1 if model in self._models else len(self._models) + 1
        n = max(len(self._models), k)
        line = _Line(f"  {model} ({k}/{n})", total=self._folds or 1)
        self._lines[f"model:{model}"] = line
        if self.interactive:
            line.task = self._progress.add_task(f"{line.name:<16}", total=line.total, completed=0,
                                                status=f"model {k} of {n}, fold 1 of {self._folds}")
        else:
            line.last_print = time.monotonic()
            self.say(f"train: model {k} of {n}: {model}")

    def _on_fold_end(self, model: str, fold: int, folds: int) -> None:
        line = self._lines.get(f"model:{model}")
        if line is None:
            return
        line.total, line.done = folds, fold + 1
        text = f"fold {fold + 1} of {folds} done"
        if fold + 1 < folds:
            text += f", fold {fold + 2} running"
        if self.interactive and line.task is not None:
            self._progress.update(line.task, total=folds, completed=fold + 1, status=text)
        elif time.monotonic() - line.last_print >= self.interval:
            line.last_print = time.monotonic()
            self.say(f"{model}: {text}")

    def _on_model_end(self, model: str, oof_roc_auc: float | None, seconds: float) -> None:
        line = self._lines.get(f"model:{model}")
        text = f"out-of-fold {_auc(oof_roc_auc)}  {seconds:.1f} s"
        if self.interactive and line is not None and line.task is not None:
            self._progress.update(line.task, completed=line.total, status=text)
        else:
            self.say(f"{model}: {text}")
        if self._train is not None:
            self._train.done += 1

    def _on_train_end(self, best: str | None, best_auc: float | None, models: int,
                      registered_version: str | None = None, best_auc_low: float | None = None,
                      best_auc_high: float | None = None, digest: str | None = None, **_: Any) -> None:
        seconds = time.monotonic() - self._train.started if self._train else 0.0
        result = f"{models} models; best {best}, out-of-fold {_auc(best_auc, best_auc_low, best_auc_high)}"
        if registered_version:
            result += f" (registered v{registered_version})"
        self.rows.append({"stage": "train", "videos": None, "cached": None, "failed": 0,
                          "seconds": seconds, "digest": digest or "", "result": result})
        if not self.interactive:
            self.say(f"train: done, {result} in {seconds:.1f} s")

    def _on_note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self.say(f"note: {text}")

    # -- the end ----------------------------------------------------------------------------
    def table(self) -> Table:
        """The summary: one row per finished stage."""
        t = Table(box=box.SIMPLE_HEAD, title=None, show_edge=False)
        for col, just in (("stage", "left"), ("videos", "right"), ("cached", "right"), ("failed", "right"),
                          ("seconds", "right"), ("digest", "left"), ("result", "left")):
            t.add_column(col, justify=just, no_wrap=col == "digest")
        for r in self.rows:
            t.add_row(r["stage"], "-" if r["videos"] is None else str(r["videos"]),
                      "-" if r["cached"] is None else str(r["cached"]), str(r["failed"]),
                      f"{r['seconds']:.1f}", r.get("digest") or "-", r["result"] or "")
        return t

    def print_summary(self) -> None:
        """The summary table, on stdout (``out``)."""
        if self.rows:
            self.out.print(self.table())
