"""Folders of images through the codec on many workers: local processes or a Ray cluster.

    from sedic.batch import compress_dir, decompress_dir, make_executor
    with make_executor(None) as ex:            # or make_executor("") for Ray, "ray://host:10001"...
        summary = compress_dir("photos", "coded", bpp=0.02, executor=ex)

The executor (executor.py) is shared with `sedic evaluate --ray`; the workers (work.py) call the
Python API, never a copy of the codec. Scale-out guide: docs/scale-out.md.
"""

from .executor import Executor, LocalExecutor, RayExecutor, Stage, WorkItem, make_executor
from .jobs import BatchSummary, compress_dir, decompress_dir

__all__ = ["compress_dir", "decompress_dir", "make_executor", "Executor", "LocalExecutor", "RayExecutor",
           "Stage", "WorkItem", "BatchSummary"]
