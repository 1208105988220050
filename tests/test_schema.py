"""The lake's schema in one home (``fvcflow/schema.py``): light to import, the only place names are
written, and the feature schema version follows the kernel tables by itself."""

from __future__ import annotations

import ast
import doctest
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fvcflow import schema
from fvcflow.cli.logs import log_path
from fvcflow.kernels.table import FRAME, FeatureTable
from fvcflow.store import Lake, lake_lock

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def _python(code: str, *args: str, cwd: Path = ROOT, path: Path | None = None) -> str:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_doctests_hold():
    result = doctest.testmod(schema, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


# ---------------------------------------------------------------- light, near the bottom

def test_the_schema_imports_only_the_standard_library_and_the_kernel_tables():
    tree = ast.parse((ROOT / "fvcflow" / "schema.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {n for n in names if n.split(".")[0] not in STDLIB} == {"fvcflow.kernels.table"}


def test_reading_names_loads_no_compute_module():
    """Neither the schema nor the training data loader (which reads its feature sets from it) loads
    Numba, OpenCV or a stage module; the kernels load when a kernel is asked for."""
    heavy = ("numba", "cv2", "fvcflow.stages.faces", "fvcflow.stages.features", "fvcflow.stages.local",
             "fvcflow.kernels.features", "fvcflow.kernels.local")
    code = ("import sys, importlib; importlib.import_module(sys.argv[1]);"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    assert _python(code, "fvcflow.schema").strip() == "[]"
    assert _python(code, "fvcflow.training.fitting.data").strip() == "[]"
    loaded = _python("import sys; from fvcflow.kernels import frame_features;"
                     "print('numba' in sys.modules, frame_features.__module__)").split()
    assert loaded == ["True", "fvcflow.kernels.features"]


# ---------------------------------------------------------------- the feature schema version

def _with_row(table: FeatureTable, name: str, group: str) -> FeatureTable:
    rows = [(f.name, f.group) for f in table.features] + [(name, group)]
    return FeatureTable(rows, table.definition, version=table.version)


def test_the_version_is_a_digest_of_the_tables():
    tables = dict(schema.KERNEL_TABLES)
    assert schema.feature_schema_version(tables) == schema.FEATURE_SCHEMA_VERSION
    rows = [(f.name, f.group) for f in FRAME.features]
    changed = {
        "a new feature": _with_row(FRAME, "blockiness_v2", "blockiness"),
        "a bumped version": FeatureTable(rows, FRAME.definition, version=FRAME.version + 1),
        "a new order": FeatureTable(rows[1:2] + rows[:1] + rows[2:], FRAME.definition, version=FRAME.version),
    }
    versions = {what: schema.feature_schema_version({**tables, "frame": t}) for what, t in changed.items()}
    assert schema.FEATURE_SCHEMA_VERSION not in versions.values(), versions
    assert len(set(versions.values())) == len(versions), versions
    temporal = {**tables, "temporal": _with_row(tables["temporal"], "flicker_max", "flicker")}
    assert schema.feature_schema_version(temporal) != schema.FEATURE_SCHEMA_VERSION


def test_the_feature_stages_keys_carry_it(tmp_path):
    """Augmented and scaled videos keep their keys (the version is in the feature stages' own part)."""
    from fvcflow.config import Settings
    from fvcflow.stages import specs

    s = Settings(home=tmp_path).resolved()
    for faces in (True, False):
        assert specs._feature_config(s, faces=faces)["schema"] == schema.FEATURE_SCHEMA_VERSION


_KEY = """
import json, sys
import polars as pl
import fvcflow
from fvcflow.config import Settings
from fvcflow.schema import ORIGINAL, feature_columns
from fvcflow.stages.specs import SPECS
from fvcflow.store import Lake, write_parquet_atomic

lake = Lake.at(sys.argv[1])
row = {"video_id": "v1", "path": "/videos/v1.mp4", "content_hash": "0" * 32, "group_id": "g1", "label": 1,
       "label_raw": "fake", "source": "folder", "variant": ORIGINAL}
write_parquet_atomic(pl.DataFrame([row]), lake.index)
settings = Settings(home=lake.root).resolved()
keys = {stage: SPECS[stage].jobs(lake, settings)["key"].to_list() for stage in ("features", "augment")}
print(json.dumps({"package": fvcflow.__file__, "columns": len(feature_columns()), **keys}))
"""


def _scratch_tree(dst: Path) -> Path:
    """A copy of the library with ``kernels/`` in the place it is installed to (``fvcflow/kernels``)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "fvcflow", dst / "fvcflow", ignore=ignore)
    shutil.copytree(ROOT / "kernels", dst / "fvcflow" / "kernels", ignore=ignore)
    return dst


def test_a_new_per_frame_feature_changes_the_stage2_cache_key(tmp_path):
    """Adding a row to the FRAME table of a scratch copy, and nothing else, gives new stage 2 keys;
    the augmentation keys (videos, not features) stay."""
    tree = _scratch_tree(tmp_path / "tree")
    before = json.loads(_python(_KEY, str(tmp_path / "a"), cwd=tmp_path, path=tree))
    table = tree / "fvcflow" / "kernels" / "table.py"
    text = table.read_text()
    last = '    ("blockiness", "blockiness"),\n'
    assert text.count(last) == 1
    table.write_text(text.replace(last, last + '    ("blockiness_chroma", "blockiness"),\n'))
    after = json.loads(_python(_KEY, str(tmp_path / "b"), cwd=tmp_path, path=tree))
    assert Path(before["package"]).is_relative_to(tree)                 # the copy is what ran
    assert after["columns"] == before["columns"] + len(schema.AGGREGATES)
    assert len(before["features"]) == 1 and after["features"] != before["features"]
    assert after["augment"] == before["augment"] and before["augment"]


# ---------------------------------------------------------------- one home for the names

def test_the_lake_reads_its_paths_from_the_layout(tmp_path):
    lake = Lake.at(tmp_path)
    fields = dict(source="demo", stage="features", command="run", name="index")
    for place in schema.LAKE:
        path = lake.path(place.key, **fields)
        assert path == tmp_path / place.path.format(**fields)
        if "{" not in place.path:
            assert getattr(lake, place.key) == path, place.key
    assert lake.unmatched("fvc") == tmp_path / "index" / "unmatched-fvc.txt"
    assert lake.cache_dir("scale") == tmp_path / "cache" / "scale"
    assert log_path(tmp_path, "run") == tmp_path / "logs" / "fvc-run.log"
    with lake_lock(lake, "index") as lock:
        assert lock == tmp_path / ".locks" / "index.lock"
    assert len({p.key for p in schema.LAKE}) == len(schema.LAKE)
    assert len({p.path for p in schema.LAKE}) == len(schema.LAKE)


def test_each_stage_publishes_the_table_the_layout_names(tmp_path):
    from fvcflow.stages.specs import SPECS

    lake = Lake.at(tmp_path)
    assert set(SPECS) == set(schema.STAGE_TABLES)
    for name, spec in SPECS.items():
        assert spec.table(lake) == lake.path(schema.STAGE_TABLES[name])
    assert SPECS["features"].table(lake) == lake.stage2
    assert SPECS["scaled_features"].table(lake) == lake.stage4


def test_one_definition_of_the_feature_sets():
    from fvcflow.models import FEATURE_SETS
    from fvcflow.training.fitting.data import feature_set_columns

    assert FEATURE_SETS == tuple(schema.FEATURE_SETS)
    for name, columns in schema.FEATURE_SETS.items():
        assert feature_set_columns(name) == list(columns)
        assert len(set(columns)) == len(columns), name


def test_the_stage_modules_write_the_schemas_columns():
    from fvcflow.stages import faces, features, local

    assert features.feature_columns is schema.feature_columns
    assert local.local_columns is schema.local_columns
    assert faces.face_columns is schema.face_columns
    assert schema.local_columns(schema.STAGE4_PREFIX)[-1] == "s4_lt_flicker_ratio"
    assert all(c.startswith(schema.LOCAL_PREFIXES) for c in schema.local_columns())
    assert all(c.startswith(schema.FACE_PREFIX) for c in schema.face_columns())


def _library_files() -> list[Path]:
    return [p for folder in ("fvcflow", "flows") for p in sorted((ROOT / folder).rglob("*.py"))
            if p != ROOT / "fvcflow" / "schema.py"]


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


@pytest.mark.parametrize("literal", ["s4_", "aug-", "emb_", "l32_", "lt_", "f_"])
def test_no_prefix_is_written_outside_the_schema(literal):
    hits = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in _library_files()
            for n in _strings(ast.parse(p.read_text())) if n.value == literal]
    assert not hits, hits


def test_the_variant_original_is_written_only_in_the_schema():
    """No comparison with, column value of, or SQL test for the literal variant ``"original"``."""
    hits = []
    for p in _library_files():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            operands = []
            if isinstance(node, ast.Compare) and "variant" in ast.unparse(node):
                operands = [node.left, *node.comparators]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "lit":
                operands = node.args
            elif isinstance(node, ast.Dict):
                operands = [v for k, v in zip(node.keys, node.values)
                            if isinstance(k, ast.Constant) and k.value == "variant"]
            if any(isinstance(o, ast.Constant) and o.value == "original" for o in operands):
                hits.append(f"{p.relative_to(ROOT)}:{node.lineno}")
        hits += [f"{p.relative_to(ROOT)}:{n.lineno}" for n in _strings(tree)
                 if "variant = 'original'" in n.value]
    assert not hits, hits
