"""Prefect layer (``fvcflow.flows``): the ``fvc`` flow, its deployments, the local run."""

from fvcflow.telemetry import analytics_off

analytics_off()  # before any module of this package imports prefect
