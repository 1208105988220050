"""Settings: sources merge in order; every bad value is refused up front, naming the setting."""

from pathlib import Path

import pytest

from fvcflow.cli import main
from fvcflow.config import STAGES, Settings
from fvcflow.errors import ConfigError


def test_defaults_run_every_stage_on_the_demo_corpus():
    s = Settings.load(env={})
    assert s.stages == list(STAGES)
    assert s.corpus.kind == "demo"
    assert s.augment.copies == 10 and s.scale.size == 256


def test_file_then_env_then_overrides(tmp_path: Path):
    cfg = tmp_path / "fvc.toml"
    cfg.write_text('workers = 3\n[corpus]\nkind = "folder"\nroot = "/data/a"\nlabels = "/data/a/l.csv"\n'
                   "[augment]\ncopies = 4\n")
    env = {"FVC_CORPUS_ROOT": "/data/b", "FVC_WORKERS": "2"}
    s = Settings.load(cfg, env=env, overrides={"augment": {"seed": 7}})
    assert s.corpus.kind == "folder" and s.corpus.root == Path("/data/b")
    assert s.workers == 2
    assert (s.augment.copies, s.augment.seed) == (4, 7)


def test_stages_are_put_in_pipeline_order():
    assert Settings(stages=["train", "ingest", "features"]).stages == ["ingest", "features", "train"]


@pytest.mark.parametrize("overrides, named", [
    ({"stages": ["ingest", "featurs"]}, "stages"),
    ({"augment": {"copies": -1}}, "augment.copies"),
    ({"scale": {"size": 255}}, "scale.size"),
    ({"workers": 0}, "workers"),
    ({"dask_address": "localhost"}, "dask_address"),
    ({"corpus": {"kind": "ffpp"}}, "corpus"),
    ({"corpus": {"kind": "folder", "root": "/x"}}, "corpus"),
    ({"augment": {"copise": 3}}, "augment.copise"),
    ({"train": {"folds": 1}}, "train.folds"),
])
def test_bad_values_name_the_setting(overrides, named):
    with pytest.raises(ConfigError, match=f"setting '{named}"):
        Settings.load(env={}, overrides=overrides)


def test_bad_config_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(bad, env={})


def test_cli_reports_a_bad_setting_without_traceback(capsys, tmp_path):
    rc = main(["--home", str(tmp_path), "run", "--stages", "features,nope"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: setting 'stages") and "Traceback" not in err
    assert not (tmp_path / "index").exists()  # nothing started


def test_resolved_home_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings(home="rel").resolved().home == tmp_path / "rel"
