"""The layers point one way (docs/DESIGN.md): kernels <- fvcflow <- flows <- deployments."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", files("kernels"), ids=lambda p: p.name)
def test_kernels_import_only_numpy_and_numba(path):
    for mod in imports(path):
        top = mod.split(".")[0]
        assert top in STDLIB or top in {"numpy", "numba"} or mod.startswith("fvcflow.kernels"), (path, mod)


@pytest.mark.parametrize("path", files("fvcflow"), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_never_imports_prefect(path):
    for mod in imports(path):
        assert mod.split(".")[0] not in {"prefect", "prefect_dask"}, (path, mod)
        assert not mod.startswith("fvcflow.flows"), (path, mod)


def test_library_import_pulls_in_no_prefect():
    code = ("import sys, fvcflow.cli, fvcflow.stages.runner, fvcflow.stages.ingest, fvcflow.analytics;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask')];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("folder", ["kernels", "fvcflow", "flows", "deployments", "tests", "benchmarks"])
def test_no_sys_path_manipulation(folder):
    for path in files(folder):
        text = path.read_text()
        for call in ("insert", "append"):
            assert f"sys.path.{call}(" not in text, path


def test_exactly_one_module_opens_containers():
    openers = [p for folder in ("fvcflow", "flows", "kernels") for p in files(folder)
               if "av.open(" in p.read_text()]
    assert openers and all(p.is_relative_to(ROOT / "fvcflow" / "video") for p in openers), openers


@pytest.mark.parametrize("path", files("fvcflow") + files("flows") + files("kernels"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_error_fallbacks(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) \
                and node.type.id in {"ImportError", "ModuleNotFoundError"}:
            # only an optional extra may be caught, and only to raise a clear error naming it
            raises = any(isinstance(n, ast.Raise) for n in ast.walk(node))
            assert raises, f"{path}:{node.lineno} hides a missing import"
