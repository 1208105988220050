"""Deployments are configuration: every one loads and its entry point resolves to flow `fvc`."""

import runpy
import sys
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from fvcflow.config import STAGES, Settings
from fvcflow.engine import THREAD_VARS, worker_env
from fvcflow.flows.deployments import (
    DEPLOYMENTS,
    ENTRYPOINT,
    SCAN,
    WORK_POOL,
    build,
    description,
    overrides,
    prefect_yaml,
)

ROOT = Path(__file__).resolve().parents[1]


def test_served_deployments_cover_full_demo_and_every_stage(tmp_path):
    deps = {d.name: d for d in build(Settings(home=tmp_path))}
    stages = {s.replace("_", "-") for s in STAGES}
    assert set(deps) == {"full", "demo", "train-deep", "scan", *stages} == set(DEPLOYMENTS) | {SCAN}
    scan = deps.pop(SCAN)
    assert scan.flow_name == "fvc" and Settings.validate_dict(scan.parameters["config"]).home == tmp_path
    assert {"paths", "model", "name"} <= set(scan._parameter_openapi_schema.properties)
    assert scan._parameter_openapi_schema.required == ["paths"]
    for name, dep in deps.items():
        assert dep.flow_name == "fvc"
        cfg = Settings.validate_dict(dep.parameters["config"])  # the parameters validate
        assert cfg.home == tmp_path
        expected = (list(STAGES) if name in ("full", "demo") else ["train"] if name == "train-deep"
                    else [name.replace("-", "_")])
        assert cfg.stages == expected
    deep = Settings.validate_dict(deps["train-deep"].parameters["config"]).train
    assert deep.kinds == ["torch_video"] and deep.reuse_splits
    assert Settings.validate_dict(deps["demo"].parameters["config"]).corpus.kind == "demo"


def test_prefect_yaml_is_the_rendering_of_the_deployments():
    """deployments/prefect.yaml is generated from DEPLOYMENTS: rerun `python -m fvcflow.flows.deployments`."""
    assert (ROOT / "deployments" / "prefect.yaml").read_text() == prefect_yaml()
    spec = yaml.safe_load(prefect_yaml())
    for dep in spec["deployments"]:
        assert dep["description"] == description(dep["name"]) and dep["work_pool"]["name"] == WORK_POOL
        assert dep.get("parameters", {}).get("config", {}) == overrides(dep["name"])


def test_prefect_yaml_entry_points_resolve(monkeypatch):
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert names == set(DEPLOYMENTS) | {SCAN}
    monkeypatch.chdir(ROOT)
    # Prefect puts a script entry point's folder and the working directory first on sys.path for
    # good: restored afterwards, or this worker's later tests would import our kernels/ as `kernels`
    monkeypatch.setattr(sys, "path", list(sys.path))
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        assert flow.name == "fvc"
        Settings.validate_dict(dep.get("parameters", {}).get("config", {}))


def test_served_deployments_load_by_module_path_and_leave_sys_path_alone(monkeypatch):
    """`fvc serve`'s flow runs load ``fvcflow.flows.pipeline.fvc`` by module: the repository root never
    goes first on sys.path (as a file entry point's load puts it, see the test above)."""
    monkeypatch.chdir(ROOT)
    before = list(sys.path)
    for dep in build(Settings(home=ROOT / "fvc-data-unused")):
        want = "fvcflow.flows.scan.scan" if dep.name == SCAN else "fvcflow.flows.pipeline.fvc"
        assert dep.entrypoint == want
        assert load_flow_from_entrypoint(dep.entrypoint).name == "fvc"
    assert sys.path == before
    monkeypatch.setattr(sys, "path", list(sys.path))
    load_flow_from_entrypoint(ENTRYPOINT)                       # the file entry point, for contrast
    assert str(ROOT) in sys.path[:2]


def test_serve_script_imports_the_deployments():
    ns = runpy.run_path(str(ROOT / "deployments" / "serve.py"), run_name="fvc_serve_check")
    assert ns["serve_all"].__module__ == "fvcflow.flows.deployments"


def test_kubernetes_spec_sets_every_thread_budget_to_the_worker_threads():
    spec = yaml.safe_load((ROOT / "deployments" / "dask-kubernetes.yaml").read_text())
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    nthreads = worker["args"][worker["args"].index("--nthreads") + 1]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert nthreads == worker["resources"]["limits"]["cpu"]
    assert {var: env.get(var) for var in THREAD_VARS} == {var: nthreads for var in THREAD_VARS}


def test_slurm_workers_get_every_thread_budget():
    assert worker_env(3) == {var: "3" for var in THREAD_VARS}
    assert "worker_env(" in (ROOT / "deployments" / "dask_slurm.py").read_text()


def test_a_served_run_keeps_to_the_served_or_an_allowed_home(tmp_path, monkeypatch):
    """`fvc serve` publishes its work dir and allowed_homes to the runs it starts (the environment
    they inherit); a run whose `home` parameter is neither is refused before any work, whatever its
    parameters say (allowed_homes is not taken from them); outside a served run nothing is checked."""
    from fvcflow.config import check_home, serving
    from fvcflow.errors import ConfigError
    from fvcflow.flows.pipeline import fvc

    monkeypatch.delenv("FVC_SERVED_HOMES", raising=False)
    served, allowed, other = tmp_path / "served", tmp_path / "shared", tmp_path / "elsewhere"
    server = Settings(home=served, allowed_homes=[allowed])
    assert "allowed_homes" not in server.model_dump()          # never sent as a run's parameter
    with serving(server):
        check_home(Settings(home=served))
        check_home(Settings(home=allowed))
        check_home(Settings(home=tmp_path / "x" / ".." / "served"))   # the same folder, spelled otherwise
        with pytest.raises(ConfigError, match=f"setting 'home': {other} is not the served work dir "
                                              f"{served} nor one of allowed_homes \\({allowed}\\)"):
            check_home(Settings(home=other, allowed_homes=[other]))
        with pytest.raises(ConfigError, match="is not the served work dir"):
            fvc.fn(config=Settings(home=other, stages=["ingest"]))
    assert not other.exists()
    check_home(Settings(home=other))                            # `fvc run`, `fvc ingest`: not served
    (tmp_path / "link").symlink_to(other, target_is_directory=True)
    with serving(Settings(home=tmp_path / "link")):
        check_home(Settings(home=other))                        # a link to the served home is it
