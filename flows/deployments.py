"""The deployments of flow ``fvc``: ``fvc/full``, one per stage, and ``fvc/demo``.

Deployments are configuration: a name, the stages it runs and default parameters taken from the
settings sources (TOML file, ``FVC_*`` environment) when the deployments are served.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from fvcflow.config import STAGES, Settings
from fvcflow.flows.pipeline import fvc

#: deployment name -> stages it runs (None: all)
DEPLOYMENTS: dict[str, list[str] | None] = {
    "full": None,
    "demo": None,
    **{stage.replace("_", "-"): [stage] for stage in STAGES},
}


def build(settings: Settings | None = None) -> list[RunnerDeployment]:
    """One :class:`RunnerDeployment` per entry of :data:`DEPLOYMENTS`."""
    settings = (settings or Settings.load()).resolved()
    out = []
    for name, stages in DEPLOYMENTS.items():
        cfg = settings.model_copy(update={"stages": stages or list(STAGES)})
        if name == "demo":
            cfg = cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"kind": "demo", "root": None,
                                                                                  "labels": None})})
        out.append(fvc.to_deployment(
            name=name,
            parameters={"config": cfg.model_dump(mode="json")},
            description=f"fvcflow: {'every stage' if stages is None else ', '.join(stages)}",
            tags=["fvcflow", name],
        ))
    return out


def serve_all(settings: Settings | None = None) -> None:
    """Serve every deployment from this process until interrupted (``fvc serve``)."""
    serve(*build(settings))
