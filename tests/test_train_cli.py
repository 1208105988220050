"""``fvc train`` errors name settings the user can reach from ``fvc train`` (issue 16, item 12)."""

from __future__ import annotations

import re

import polars as pl

from fvcflow.cli import main as fvc
from tests.feature_tables import write_lake


def _train(home, capsys, *extra, config=None) -> tuple[int, str]:
    rc = fvc(["--home", str(home), *(["--config", str(config)] if config else []), "train",
              "--models", "logreg_s2", "--test-size", "0", "--folds", "3", "--no-register", *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_the_inner_folds_an_error_names_are_reachable_from_fvc_train(tmp_path, capsys):
    lake = write_lake(tmp_path / "fvc-data", n_groups=8, n_aug=0, mixed_groups=0, n_unlabelled=0, seed=3)
    rc, out = _train(lake.root, capsys)
    assert rc == 2 and "Traceback" not in out, out
    line = next(x for x in out.splitlines() if x.startswith("error: "))
    m = re.search(r"lower inner_folds \(fvc train --inner-folds N, or inner_folds under \[train\] in the "
                  r"--config file\) to at most (\d)", line)
    assert m, line
    at_most = m.group(1)
    rc, out = _train(lake.root, capsys, "--inner-folds", at_most)          # the flag the error names
    assert rc == 0, out
    assert pl.read_parquet(lake.predictions)["model"].unique().to_list() == ["logreg_s2"]
    config = tmp_path / "fvc.toml"
    config.write_text(f"[train]\ninner_folds = {at_most}\n")
    rc, out = _train(lake.root, capsys, config=config)                      # or the file it names
    assert rc == 0, out


def test_inner_folds_flag_is_validated_like_the_setting(tmp_path, capsys):
    lake = write_lake(tmp_path / "fvc-data", n_groups=8, n_aug=0)
    rc, out = _train(lake.root, capsys, "--inner-folds", "1")
    assert rc == 2 and "Traceback" not in out and "inner_folds" in out, out


def test_every_flag_an_error_may_name_exists():
    import argparse

    from fvcflow.cli import build_parser
    from fvcflow.config import TRAIN_FLAGS

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    options = {o for a in sub._actions for o in a.option_strings}
    assert {flag.split()[0] for flag in TRAIN_FLAGS.values()} <= options


def test_fvc_train_loads_the_settings_once_and_its_flags_win(tmp_path, capsys, monkeypatch):
    from fvcflow import config
    from fvcflow.training import run as training_run

    lake = write_lake(tmp_path / "lake", n_groups=12, n_aug=0)
    loads, seen = [], []
    real_load = config.Settings.load.__func__
    monkeypatch.setattr(config.Settings, "load",
                        classmethod(lambda cls, *a, **k: loads.append(1) or real_load(cls, *a, **k)))
    monkeypatch.setattr(training_run, "run_training", lambda lake, cfg: seen.append(cfg) or 1 / 0)
    cfg_file = tmp_path / "fvc.toml"
    cfg_file.write_text("[train]\nfolds = 4\nseed = 7\n")
    try:
        _train(lake.root, capsys, config=cfg_file)
    except ZeroDivisionError:
        pass
    assert len(loads) == 1
    assert (seen[0].folds, seen[0].seed, seen[0].models, seen[0].register_best) == (3, 7, "logreg_s2", False)
