"""Checking a device name before any work: the CLI, the Python API, the server and the batch
runner all call `resolve_device`, so a bad name is the same one-line error everywhere."""

from __future__ import annotations

from .errors import InputError


def resolve_device(name: str | None, gpus: int | None = None) -> str:
    """The device to run models on: `name` checked against this machine, or the best one here.

    None -> "cuda" when a CUDA GPU is present, else "cpu". Accepted: cpu, cuda, cuda:N (N below
    the number of GPUs) and mps where available; anything else is an InputError. `gpus`: check
    against a cluster with that many GPUs instead of this machine (the batch runner on Ray)."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    where = "on this machine" if gpus is None else "in the Ray cluster"
    if device.type == "cuda":
        count = gpus if gpus is not None else torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {name!r} requested but there is no CUDA GPU {where}")
        # a cluster's GPUs are numbered per node: only this machine's index can be checked
        if gpus is None and device.index is not None and device.index >= count:
            raise InputError(f"device {name!r} requested but this machine has {count} CUDA GPU(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {name!r} requested but MPS is not available {where}")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    return name


# The one dtype vocabulary of every settings field named `dtype` (analysis and decoder).
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_dtype(name: str, where: str = "dtype") -> str:
    if name not in DTYPES:
        raise InputError(f"{where} must be one of {', '.join(DTYPES)}, got {name!r}")
    return name


def resolve_dtype(name: str, device):
    """The torch dtype of `name` on `device` (a name or torch.device): "auto" is bfloat16 on CUDA
    (half the memory and time) and float32 elsewhere (CPUs run it fastest and most reliably)."""
    import torch

    check_dtype(name)
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)
