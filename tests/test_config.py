"""Settings: sources merge in order; every bad value is refused up front, naming the setting."""

import ast
import os
import re
from pathlib import Path

import pytest

from fvcflow.cli import main
from fvcflow.config import ENV_VARS, STAGES, Settings, TrainConfig
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


def test_a_misspelled_secret_is_named_never_shown(tmp_path: Path):
    """``zip_pasword = "..."`` in the settings file: the error names the setting (and the one meant),
    never the value; nor does any error about the real secret setting."""
    secret = "Hunter2-very-secret"
    cfg = tmp_path / "fvc.toml"
    cfg.write_text(f'zip_pasword = "{secret}"\n[corpus]\nzip_password = "{secret}"\n')
    with pytest.raises(ConfigError) as exc:
        Settings.load(cfg, env={})
    text = str(exc.value)
    assert "setting 'zip_pasword': not a setting (did you mean 'zip_password'?)" in text
    assert "setting 'corpus.zip_password': not a setting" in text
    assert secret not in text and "Hunter" not in text
    hidden = "setting 'zip_password': .*the value of a secret is not shown"
    with pytest.raises(ConfigError, match=hidden) as exc:
        Settings.load(env={}, overrides={"zip_password": [secret]})
    assert secret not in str(exc.value)


def test_a_long_value_in_a_config_error_is_cut():
    long = "tcp-" + "x" * 500 + "-tail"
    cut = r"setting 'dask_address': .*\(got 'tcp-x+\.\.\. \(511 characters\)\)"   # the repr's length
    with pytest.raises(ConfigError, match=cut) as exc:
        Settings.load(env={}, overrides={"dask_address": long})
    assert "-tail" not in str(exc.value) and len(str(exc.value)) < 200
    cut = r"setting 'train\.folds': .*\(got 'y+\.\.\. \(1002 characters\)\)$"
    with pytest.raises(ConfigError, match=cut):
        TrainConfig.make(folds="y" * 1000)
    with pytest.raises(ConfigError, match=r"setting 'corpus': .*\(got a table\)"):
        Settings.load(env={}, overrides={"corpus": {"kind": "ffpp"}})


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


# ---------------------------------------------------------------- one home for the environment

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for folder in ("fvcflow", "kernels", "flows", "deployments")
           for p in sorted((ROOT / folder).rglob("*")) if p.is_file() and p.suffix in (".py", ".yaml", ".sh")]
#: FVC_* names that are not fvcflow settings, and why
NOT_SETTINGS = {"FVC_REPO": "deployments/prefect.yaml: the checkout `prefect deploy` pulls (Prefect's "
                "templating)"}


def _is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every read of a variable from ``os.environ``: ``.get``, ``[...]`` (not as
    an assignment target), ``os.getenv``, ``in os.environ``, and ``os.environ`` handed on whole
    (aliased, passed as an argument) except as ``{**os.environ}`` for a child process."""
    reads, allowed = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            allowed |= {id(v) for k, v in zip(node.keys, node.values) if k is None and _is_environ(v)}
        if isinstance(node, ast.Call) and isinstance(node.func,
                                                     ast.Attribute) and _is_environ(node.func.value):
            allowed.add(id(node.func.value))
            if node.func.attr in ("get", "copy", "items", "keys", "values"):
                reads.append((node.lineno, f"os.environ.{node.func.attr}"))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            allowed.add(id(node.value))
            if isinstance(node.ctx, ast.Load):
                reads.append((node.lineno, "os.environ[...]"))
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            allowed |= {id(c) for c in node.comparators}
            reads.append((node.lineno, "... in os.environ"))
        elif (isinstance(node, ast.Call) and isinstance(node.func,
                                                        ast.Attribute) and node.func.attr == "getenv"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"):
            reads.append((node.lineno, "os.getenv"))
    for node in ast.walk(tree):
        if _is_environ(node) and id(node) not in allowed:
            reads.append((node.lineno, "os.environ handed on"))
    return reads


def test_only_config_reads_the_environment():
    """Everything else receives values: a Settings, or an argument (writes for third-party
    libraries, such as Prefect's logging variables, are allowed)."""
    found = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in LIBRARY if p.suffix == ".py"
             for line, what in environment_reads(ast.parse(p.read_text()))
             if p != ROOT / "fvcflow" / "config.py"]
    assert not found, found


def test_the_environment_reads_are_found():
    code = ("import os\na = os.environ.get('X')\nb = os.environ['Y']\nc = 'Z' in os.environ\n"
            "d = os.getenv('W')\ne = os.environ\nos.environ['V'] = '1'\nos.environ.setdefault('U', '1')\n"
            "f = {**os.environ, 'T': '1'}\n")
    assert [line for line, _ in environment_reads(ast.parse(code))] == [2, 3, 4, 5, 6]


def test_every_fvc_variable_is_a_setting():
    """Every FVC_* name in the library, its deployment files and scripts is read by Settings.load
    into the field ENV_VARS names."""
    names = {m for p in LIBRARY for m in re.findall(r"\bFVC_[A-Z][A-Z0-9_]*\b", p.read_text())}
    assert names - set(NOT_SETTINGS) == set(ENV_VARS), names ^ set(ENV_VARS)
    fields = Settings.model_fields
    for var, path in ENV_VARS.items():
        if not path:
            continue
        head, *rest = path.split(".")
        assert head in fields, var
        if rest:
            assert rest[0] in fields[head].annotation.model_fields, var


def test_each_variable_fills_its_setting(tmp_path):
    env = {"FVC_HOME": str(tmp_path / "h"), "FVC_CORPUS_KIND": "folder", "FVC_CORPUS_ROOT": str(tmp_path),
           "FVC_CORPUS_LABELS": str(tmp_path / "l.csv"), "FVC_DASK_ADDRESS": "tcp://10.0.0.1:8786",
           "FVC_WORKERS": "3", "FVC_ZIP_PASSWORD": "s3cret",
           "FVC_ALLOWED_HOMES": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])}
    # no settings: the file, serve's homes, the app's token, the model server's bound
    no_setting = {"FVC_CONFIG", "FVC_SERVED_HOMES", "FVC_APP_TOKEN", "FVC_SERVE_MAX_BYTES"}
    assert set(env) | no_setting == set(ENV_VARS)
    s = Settings.load(env=env)
    assert (s.home, s.corpus.kind, s.corpus.root, s.corpus.labels) == (
        tmp_path / "h", "folder", tmp_path, tmp_path / "l.csv")
    assert (s.dask_address, s.workers, s.password()) == ("tcp://10.0.0.1:8786", 3, b"s3cret")
    assert s.allowed_homes == [tmp_path / "a", tmp_path / "b"]


def test_the_password_is_never_serialized_nor_shown():
    s = Settings.load(env={"FVC_ZIP_PASSWORD": "s3cret"})
    assert "s3cret" not in s.model_dump_json() + repr(s) + str(s.model_dump())
    assert Settings.model_validate(s.model_dump(mode="json")).zip_password is None   # a flow run's copy
    env = {"FVC_ZIP_PASSWORD": "x"}
    again = Settings.model_validate(s.model_dump(mode="json")).with_process_secrets(env)
    assert again.password() == b"x" and s.with_process_secrets(env).password() == b"s3cret"   # kept


@pytest.mark.parametrize("command", [["sql", "--list"], ["train", "--list"], ["predict", "v.mp4"],
                                     ["ingest", "folder", "corpus"], ["demo-corpus", "out"],
                                     ["run"], ["serve"]])
@pytest.mark.parametrize("where", ["before", "after"])
def test_every_command_validates_config_and_home_first(command, where, tmp_path, capsys):
    """--config and --home on every command (before or after its name); a bad settings file
    stops it before any work, with one line naming the setting."""
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = 0\n")
    common = ["--config", str(bad), "--home", str(tmp_path / "home")]
    argv = common + command if where == "before" else command[:1] + common + command[1:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: setting 'workers'") and "Traceback" not in err, err
    assert not (tmp_path / "home").exists() and not (tmp_path / "out").exists()


def test_home_flag_and_variable_reach_the_command(tmp_path, monkeypatch):
    """The command receives the validated settings: $FVC_HOME, then --home before or after it."""
    import fvcflow.cli.sql as sql

    seen = []
    monkeypatch.setattr(sql, "run", lambda args: seen.append(args.settings.home) or 0)
    monkeypatch.setenv("FVC_HOME", str(tmp_path / "from-env"))
    assert main(["sql", "--list"]) == 0
    assert main(["sql", "--home", str(tmp_path / "after"), "--list"]) == 0
    assert main(["--home", str(tmp_path / "before"), "sql", "--list"]) == 0
    assert seen == [tmp_path / "from-env", tmp_path / "after", tmp_path / "before"]


def test_each_enumeration_is_written_once():
    """Corpus kinds, stages, the registered name and the bit-exact x264 options each have one
    home; the other lists derive from it."""
    from typing import get_args

    from fvcflow.cli import build_parser
    from fvcflow.config import CORPUS_KINDS, REGISTERED_NAME, CorpusKind, Stage, TrainConfig
    from fvcflow.detector.predict import DEFAULT_NAME
    from fvcflow.flows.video import VIDEO_STAGES
    from fvcflow.ingest import KINDS
    from fvcflow.stages.specs import SPECS

    assert CORPUS_KINDS == (*KINDS, "demo") == get_args(CorpusKind)
    assert get_args(Stage) == STAGES and VIDEO_STAGES == tuple(SPECS) == STAGES[1:-1]
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    assert next(a for a in run._actions if a.dest == "corpus_kind").choices == CORPUS_KINDS
    assert DEFAULT_NAME == REGISTERED_NAME == TrainConfig().registered_name
    code = {p: p.read_text() for p in LIBRARY if p.suffix == ".py"}
    for literal, home in [('"fvc-detector"', "fvcflow/config.py"),
                          ('"mbtree=0"', "fvcflow/video/write.py"),
                          ('"ingest", "augment"', "fvcflow/config.py")]:
        assert [str(p.relative_to(ROOT)) for p, text in code.items() if literal in text] == [home], literal
