"""The layers point one way (docs/DESIGN.md): kernels <- fvcflow <- flows <- deployments.

An import is any way of loading a module: ``import``/``from`` statements anywhere (module level or
inside a function), ``importlib.import_module(...)``/``__import__(...)`` with a literal name or an
f-string whose leading literal names a package. Three checks run over that graph: the layer rules
(``violations``), no cycle between the library's units (``cycles``: a top-level module or a
subpackage of fvcflow, and each room of ``fvcflow.training``: fitting, tracking, evidence, run)
and no cycle between its files (``cycles(..., files=True)``; package ``__init__`` files, which only
hand names on, left out). All take the tree's root, so that they are shown to fail on planted
breaches in a scratch copy.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
#: installed package -> its folder in the repository (pyproject.toml's package-dir)
PACKAGES = {"fvcflow": "fvcflow", "fvcflow.kernels": "kernels", "fvcflow.flows": "flows"}
#: the entry point may import the Prefect layer; nothing may import it
ENTRY_POINT = "fvcflow.__main__"
#: modules that import a module named by a variable, and why that name never crosses a layer
DYNAMIC = {
    "fvcflow.models.tabular": "the optional boosting extras by name (lightgbm, catboost)",
}
IMPORTERS = {"import_module", "__import__"}
#: packages whose rooms are units of their own (training: fitting <- tracking <- evidence <- run)
ROOMS = ("fvcflow.training",)


def module_files(root: Path) -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports(path: Path, module: str, known: set[str] | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (module ``module``); a dynamic
    import of a name held in a variable gives ``"?"``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((node.lineno, full if known and full in known else base))
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name not in IMPORTERS:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.append((node.lineno, arg.value))
            elif (isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
                  and arg.values[0].value.rstrip(".")):
                out.append((node.lineno, arg.values[0].value.rstrip(".")))
            else:
                out.append((node.lineno, "?"))
    return out


def violations(root: Path) -> list[str]:
    """Every import that breaks a layer rule, as ``path:line: what``."""
    mods = module_files(root)
    bad = []
    for module, path in mods.items():
        where = path.relative_to(root)
        for line, name in imports(path, module, set(mods)):
            top = name.split(".")[0]
            if name == ENTRY_POINT:
                bad.append(f"{where}:{line}: imports the entry point {name}")
            elif name == "?":
                if module not in DYNAMIC:
                    bad.append(f"{where}:{line}: imports a module named by a variable")
            elif module.startswith("fvcflow.kernels"):
                if not (top in STDLIB or top in {"numpy", "numba"} or name.startswith("fvcflow.kernels")):
                    bad.append(f"{where}:{line}: kernels import {name}")
            elif not module.startswith("fvcflow.flows") and module != ENTRY_POINT:
                if top in {"prefect", "prefect_dask"} or name.startswith("fvcflow.flows"):
                    bad.append(f"{where}:{line}: the library imports {name}")
    return bad


def unit(module: str) -> str:
    parts = module.split(".")
    if any(module.startswith(room + ".") for room in ROOMS):
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def cycles(root: Path, *, files: bool = False) -> list[list[str]]:
    """The groups of library units (or, with ``files``, of modules) that import each other
    (strongly connected components of the graph over every import, function bodies and strings
    included), each sorted."""
    mods = module_files(root)
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    node = (lambda m: m) if files else unit
    edges: dict[str, set[str]] = {}
    for module, path in mods.items():
        if module == ENTRY_POINT or (files and module in packages):
            continue
        for _, name in imports(path, module, set(mods)):
            while files and name and name not in mods:
                name = name.rpartition(".")[0]        # a name imported from a module: the module
            if (name.startswith("fvcflow") and node(name) != node(module)
                    and not (files and name in packages)):
                edges.setdefault(node(module), set()).add(node(name))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:                      # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(found)


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


# ---------------------------------------------------------------- the tree

def test_no_import_breaks_a_layer():
    assert violations(ROOT) == []


def test_no_cycle_between_the_library_units():
    assert cycles(ROOT) == []


def test_no_cycle_between_the_library_files():
    assert cycles(ROOT, files=True) == []


def test_the_torch_layer_never_imports_training_and_fitting_never_imports_what_is_above_it():
    mods = module_files(ROOT)
    for module, path in mods.items():
        names = [n for _, n in imports(path, module, set(mods))]
        if module.startswith("fvcflow.deep"):
            assert not [n for n in names if n.startswith("fvcflow.training")], module
        if module.startswith("fvcflow.training.fitting"):
            assert not [n for n in names if n.startswith(("fvcflow.training.tracking",
                                                          "fvcflow.training.evidence",
                                                          "fvcflow.training.run"))], module


def test_the_library_import_pulls_in_no_prefect():
    code = ("import sys, fvcflow.cli, fvcflow.stages.runner, fvcflow.stages.ingest, fvcflow.analytics;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask')];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_entry_point_hands_the_flow_layer_to_the_cli():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'fvc = "fvcflow.__main__:main"' in text
    mods = module_files(ROOT)
    assert {n for _, n in imports(mods[ENTRY_POINT], ENTRY_POINT)} >= {"fvcflow.flows.local",
                                                                      "fvcflow.flows.deployments"}


# ---------------------------------------------------------------- the checks fail where they should

@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    """A copy of the three packages' sources to plant breaches in."""
    for folder in PACKAGES.values():
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _plant(path: Path, code: str) -> int:
    """Append ``code`` to ``path``; the line number of its first line."""
    text = path.read_text()
    path.write_text(text + "\n\n" + code + "\n")
    return text.count("\n") + 3


@pytest.mark.parametrize("code, what", [
    ('def _sneak():\n    import importlib\n    return importlib.import_module("fvcflow.flows.local")',
     "the library imports fvcflow.flows.local"),
    ('def _sneak(stage):\n    from importlib import import_module\n'
     '    return import_module(f"fvcflow.flows.{stage}")', "the library imports fvcflow.flows"),
    ('def _sneak():\n    return __import__("prefect")', "the library imports prefect"),
    ('def _sneak(name):\n    import importlib\n    return importlib.import_module(name)',
     "imports a module named by a variable"),
    ('def _sneak():\n    import fvcflow.__main__', "imports the entry point fvcflow.__main__"),
])
def test_a_planted_import_in_a_function_is_a_violation(scratch, code, what):
    line = _plant(scratch / "fvcflow" / "store.py", code)
    found = violations(scratch)
    assert len(found) == 1 and found[0].startswith("fvcflow/store.py:") and found[0].endswith(what), found
    assert int(found[0].split(":")[1]) > line - 1


def test_a_planted_string_import_in_a_kernel_is_a_violation(scratch):
    _plant(scratch / "kernels" / "color.py", 'def _sneak():\n    return __import__("scipy.ndimage")')
    assert [v.split(": ", 1)[1] for v in violations(scratch)] == ["kernels import scipy.ndimage"]


def test_a_cycle_through_a_function_body_is_found(scratch):
    """store is below training (training imports store); an import back, hidden in a function
    body or a string, closes a cycle."""
    assert cycles(scratch) == []
    _plant(scratch / "fvcflow" / "store.py",
           "def _late():\n    from fvcflow.training import run\n    return run")
    assert any({"fvcflow.store", "fvcflow.training.run"} <= set(group) for group in cycles(scratch))


def test_a_deep_import_of_training_is_a_cycle(scratch):
    """training's trainers call the torch layer; the torch layer calling back closes a cycle."""
    _plant(scratch / "fvcflow" / "deep" / "loop.py",
           "def _late():\n    from fvcflow.training.fitting import splits\n    return splits")
    assert any({"fvcflow.deep", "fvcflow.training.fitting"} <= set(group) for group in cycles(scratch))


def test_a_cycle_of_files_inside_one_unit_is_found(scratch):
    assert cycles(scratch, files=True) == []
    _plant(scratch / "fvcflow" / "training" / "fitting" / "data.py",      # cv imports data
           "def _late():\n    from fvcflow.training.fitting import cv\n    return cv")
    assert any({"fvcflow.training.fitting.cv", "fvcflow.training.fitting.data"} <= set(group)
               for group in cycles(scratch, files=True))


def test_a_cycle_through_a_string_import_is_found(scratch):
    _plant(scratch / "fvcflow" / "video" / "probe.py", 'def _late():\n    import importlib\n'
           '    return importlib.import_module("fvcflow.stages.features")')
    assert any({"fvcflow.stages", "fvcflow.video"} <= set(group) for group in cycles(scratch))


# ---------------------------------------------------------------- other house rules

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


# ---------------------------------------------------------------- pyproject.toml

def _requirement(text: str) -> set[str]:
    """``dask[distributed]>=2024.8`` -> {"dask", "distributed"}: the distributions it brings."""
    name, _, rest = text.partition("[")
    name = name.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip()
    extras = rest.split("]")[0].split(",") if rest else []
    return {n.strip().lower().replace("_", "-") for n in [name, *extras] if n.strip()}


def test_pyproject_declares_what_the_library_imports_and_dev_holds_the_rest():
    """Every third-party module fvcflow, kernels and flows import comes from a declared runtime
    dependency (or an optional extra); the dev extra's packages are not imported by them."""
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = set().union(*map(_requirement, project["dependencies"]))
    extras = {k: set().union(*map(_requirement, v)) for k, v in project["optional-dependencies"].items()}
    optional = set().union(*(v for k, v in extras.items() if k != "dev"))
    owners = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in packages_distributions().items()}
    mods = module_files(ROOT)
    imported = {name.split(".")[0] for module, path in mods.items() for _, name in imports(path, module)}
    imported -= STDLIB | {"fvcflow", "?"}
    undeclared = {m: owners.get(m) for m in imported if not owners.get(m, set()) & (runtime | optional)}
    assert not undeclared, undeclared
    dev_only = extras["dev"] - runtime - optional
    assert not {m for m in imported if owners.get(m, set()) & dev_only}, dev_only


def test_every_package_is_in_the_distribution():
    """``[tool.setuptools] packages`` lists every folder with an ``__init__.py`` under the package
    dirs: a wheel (``pip install .``, not editable) holds only the listed ones."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    listed = set(tool["packages"])
    assert found - listed == set(), "packages missing from pyproject.toml's [tool.setuptools] packages"
    assert listed - found == set(), "listed packages without an __init__.py"
