"""FAISS on the GPU: whether this faiss build sees one, the ARCHIVE_FAISS_GPU setting, the
process's shared GPU resources and the GPU copy of a CPU index."""
from __future__ import annotations

import logging
import threading

import faiss

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    """True when this faiss is a GPU build (faiss-gpu) and sees at least one GPU."""
    return gpu_status() is None


def gpu_status() -> str | None:
    """None when FAISS can search on a GPU here, else why not (for logs and test skips)."""
    if not (hasattr(faiss, "index_cpu_to_all_gpus") and hasattr(faiss, "get_num_gpus")
            and hasattr(faiss, "StandardGpuResources")):
        return f"faiss {getattr(faiss, '__version__', '?')} is a CPU build (install faiss-gpu: requirements-gpu.txt)"
    try:
        n = faiss.get_num_gpus()
    except Exception as exc:   # a GPU build whose CUDA runtime or driver is missing
        return f"faiss could not count GPUs ({exc})"
    return None if n > 0 else "faiss is a GPU build but sees no GPU (no device or driver)"


def parse_gpu_setting(value) -> bool | None:
    """ARCHIVE_FAISS_GPU: "auto" (or unset/None) -> None: the GPU when FAISS has one;
    "1"/"true"/"yes"/"on" -> True: the GPU, asked for (a warning and the CPU where there is
    none); "0"/"false"/"no"/"off" -> False: always the CPU."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"ARCHIVE_FAISS_GPU must be auto, 1 or 0, not {value!r}")


_gpu_resources = None
_gpu_resources_lock = threading.Lock()


def gpu_resources():
    """The process's one StandardGpuResources (its scratch memory and streams), shared by every
    index copied to GPU 0, so each copy does not reserve scratch space of its own."""
    global _gpu_resources
    with _gpu_resources_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        return _gpu_resources


def to_gpu(cpu_index):
    """A GPU copy of a CPU index (IndexIDMap2 over a flat index, or an IVF-Flat): on one GPU
    through the shared StandardGpuResources, over all of them (sharded by
    index_cpu_to_all_gpus) when there are several."""
    if faiss.get_num_gpus() == 1:
        return faiss.index_cpu_to_gpu(gpu_resources(), 0, cpu_index)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(cpu_index, co=options)


_warned_no_gpu = False


def warn_no_gpu() -> None:
    global _warned_no_gpu
    if not _warned_no_gpu:
        _warned_no_gpu = True
        log.warning("FAISS on the GPU was asked for (ARCHIVE_FAISS_GPU), but %s; searching on the CPU",
                    gpu_status())

