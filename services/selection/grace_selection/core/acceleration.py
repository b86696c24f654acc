"""Whether the greedy loops run compiled (numba) or as the pure numpy / Python fallback.

numba is an optional extra (`pip install grace-coresets[fast]`). Both paths return the same
picks, pick for pick (tests run both), so the choice changes speed, never a coreset.

- installed and `GRACE_NUMBA` unset (or `1`): compiled;
- `GRACE_NUMBA=0`: the fallback, even with numba installed (tests, or to rule numba out);
- `GRACE_NUMBA=1` without numba: an error that names the extra, not a silent slow path.

numba is imported on the first compiled call, never when the core is imported: importing numba
costs about half a second, and a process that never selects should not pay it. The kernels are
compiled with cache=True, so a process pays the JIT once per install (a few seconds), and later
processes load the machine code from the cache.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import numpy as np
import numpy.typing as npt

ENV_VAR = "GRACE_NUMBA"
_KERNELS = "grace_selection.core.kernels"
_JOIN_KERNELS = "grace_selection.core.join_kernels"
_NEIGHBORHOOD_JOIN_KERNELS = "grace_selection.core.neighborhood_join_kernels"
_ESTIMATION_KERNELS = "grace_selection.core.estimation_kernels"
_SIMILARITY_KERNELS = "grace_selection.core.similarity_kernels"


def numba_enabled() -> bool:
    """True when the compiled kernels should run; read on every call so that a test can flip
    the environment variable between calls."""
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    installed = importlib.util.find_spec("numba") is not None
    if setting in ("1", "true", "yes", "on") and not installed:
        raise RuntimeError(
            f"{ENV_VAR}={setting} asks for the compiled selectors, but numba is not installed; "
            "pip install 'grace-coresets[fast]', or unset the variable to use the numpy path"
        )
    return installed


def kernels() -> ModuleType:
    """The compiled kernels module (imports numba on first use)."""
    return importlib.import_module(_KERNELS)


def join_kernels() -> ModuleType:
    """The compiled graph-upkeep kernels of `core.descent` (imports numba on first use)."""
    return importlib.import_module(_JOIN_KERNELS)


def neighborhood_join_kernels() -> ModuleType:
    """The compiled local join of `core.neighborhood_join` (imports numba on first use)."""
    return importlib.import_module(_NEIGHBORHOOD_JOIN_KERNELS)


def estimation_kernels() -> ModuleType:
    """The compiled stale-score estimation rules of `core.estimation` (imports numba on first
    use)."""
    return importlib.import_module(_ESTIMATION_KERNELS)


def similarity_kernels() -> ModuleType:
    """The compiled build of `core.similarity` (imports numba on first use)."""
    return importlib.import_module(_SIMILARITY_KERNELS)


def kernel_vectors(
    vectors: npt.NDArray[np.floating],
) -> npt.NDArray[np.float32] | npt.NDArray[np.uint16] | None:
    """The (N, d) unit vectors as the compiled graph kernels read them, or None where those
    kernels are off and the numpy path runs: C-ordered float32 as they are, C-ordered float16
    as their bits (a uint16 view, no copy), which the kernels convert as they read them where
    the CPU converts half floats in one instruction (`join_kernels.HALF_FLOATS`)."""
    if not numba_enabled() or not vectors.flags.c_contiguous:
        return None
    if vectors.dtype == np.float32:
        return vectors.view(np.float32)
    if vectors.dtype == np.float16 and join_kernels().HALF_FLOATS:
        return vectors.view(np.uint16)
    return None
