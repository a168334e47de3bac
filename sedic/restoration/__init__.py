"""The generative decoder: `restore(preview, semantics, settings, seed, ...)` (see pipeline.py).

`restore` is imported lazily so that reading settings (sedic.config) does not import torch.
"""

__all__ = ["restore"]


def __getattr__(name):
    if name == "restore":
        from .pipeline import restore

        return restore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
