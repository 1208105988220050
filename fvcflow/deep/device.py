"""Which device trains: the ``train.deep.device`` setting (auto, cuda, cpu) and what it reports."""

from __future__ import annotations

from typing import Any

from fvcflow.errors import ConfigError


def gpu_count() -> int:
    """CUDA devices this process sees (0 without torch's CUDA or a GPU)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(setting: str = "auto"):
    """``torch.device`` for the setting: ``auto`` takes CUDA when present; ``cuda`` without one is an error.

    >>> choose_device("cpu").type
    'cpu'
    """
    import torch

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if setting in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("setting 'train.deep.device' is 'cuda' but torch sees no CUDA device")
        return torch.device("cuda")
    raise ConfigError(f"setting 'train.deep.device': must be auto, cuda or cpu (got {setting!r})")


def device_tags(device) -> dict[str, str]:
    """MLflow tags naming the device (and the GPU)."""
    import torch

    tags = {"fvc.device": device.type}
    if device.type == "cuda":
        tags["fvc.gpu_name"] = torch.cuda.get_device_name(device)
    return tags


def peak_memory(device) -> dict[str, Any]:
    """Peak GPU memory of this process in MiB (a tag), nothing on the CPU."""
    import torch

    if device.type != "cuda":
        return {}
    return {"fvc.gpu_peak_mib": f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"}
