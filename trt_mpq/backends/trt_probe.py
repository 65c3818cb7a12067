"""The TensorRT backend's probe: before any TensorRT object exists, is there a GPU, TensorRT >= 10 and
Polygraphy, and does what pip resolved fit the host? Each missing piece is one sentence."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable

MIN_VERSION = (10, 0)
INSTALL = ("pip install 'trt-mpq[gpu]' on an NVIDIA host (or use docker/Dockerfile), or plan on the CPU with "
           "--backend onnxruntime")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text))[:3])


def _import(name: str, importer: Callable[[str], object]):
    try:
        return importer(name)
    except ImportError:
        return None


def probe(importer: Callable[[str], object] = importlib.import_module) -> str | None:
    """None when a GPU, TensorRT >= 10 and Polygraphy are usable; otherwise one sentence on what is missing."""
    cudart = _import("cuda.bindings.runtime", importer) or _import("cuda.cudart", importer)
    if cudart is None:
        return (f"the TensorRT backend needs cuda-python (to find the GPU) and TensorRT, which are not installed; "
                f"{INSTALL}.")
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # a broken driver install raises from the binding itself
        return f"the TensorRT backend could not query the GPUs through cuda-python ({exc}); check the NVIDIA driver."
    if int(err) != 0 or not count:
        why = getattr(err, "name", str(err)) if int(err) != 0 else "0 devices"
        return (f"the TensorRT backend needs an NVIDIA GPU and none is visible ({why}); run on an NVIDIA host with "
                "its driver (in Docker: --gpus all), or plan on the CPU with --backend onnxruntime.")
    trt = _import("tensorrt", importer)
    if trt is None:
        return f"the TensorRT backend needs TensorRT, which is not installed; {INSTALL}."
    version = getattr(trt, "__version__", "0")
    if version_tuple(version) < MIN_VERSION:
        return (f"TensorRT {version} is too old: strongly typed networks need 10.0 or newer; "
                "pip install 'tensorrt>=10' or use docker/Dockerfile.")
    if _import("polygraphy.backend.trt", importer) is None:
        return "the TensorRT backend needs Polygraphy, which is not installed; pip install 'polygraphy>=0.50.3'."
    return _stack_mismatch(cudart, trt, importer)


def _stack_mismatch(cudart, trt, importer: Callable[[str], object]) -> str | None:
    """What pip resolved against what the host runs: a CUDA 13 stack on a CUDA 12 driver, a Polygraphy that
    predates TensorRT 11, no CUDA runtime library for Polygraphy's runner."""
    with contextlib.suppress(Exception):
        err, driver = cudart.cudaDriverGetVersion()  # e.g. 12040 for CUDA 12.4
        bindings = _import("cuda.bindings", importer) or _import("cuda", importer)
        major = version_tuple(getattr(bindings, "__version__", "0"))[:1]
        if int(err) == 0 and major and major[0] * 1000 > int(driver):
            return (f"cuda-python {bindings.__version__} is built for CUDA {major[0]}, but the NVIDIA driver supports "
                    f"CUDA {int(driver) // 1000}.{int(driver) % 1000 // 10}; install the CUDA {int(driver) // 1000} "
                    f"stack (see the README: pip install 'tensorrt-cu12' 'cuda-python>=12,<13') or update the driver.")
    polygraphy = _import("polygraphy", importer)
    pv = getattr(polygraphy, "__version__", None)
    if pv and version_tuple(trt.__version__) >= (11,) and version_tuple(pv) < (0, 50, 3):
        return (f"Polygraphy {pv} cannot build with TensorRT {trt.__version__} (it reads a layer property TensorRT 11 "
                "removed); pip install 'polygraphy>=0.50.3'.")
    cuda = _import("polygraphy.cuda", importer)
    try:
        if cuda is not None:
            cuda.wrapper()  # Polygraphy's runner loads libcudart through ctypes here
    except Exception as exc:
        return (f"Polygraphy could not load the CUDA runtime library ({_first_line(exc)}); pip install "
                "'nvidia-cuda-runtime-cu12' (or -cu13, matching TensorRT) or put libcudart.so on LD_LIBRARY_PATH.")
    return None



def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
