"""Prefect layer (``fvcflow.flows``): the ``fvc`` flow, its deployments, the local run."""

from fvcflow.telemetry import analytics_off, safe_path_for_children

analytics_off()  # before any module of this package imports prefect
safe_path_for_children()  # the flow-run subprocesses, servers and workers it starts
