"""Log-space arithmetic shared by justkit's RNN-T kernels: one plain-Python body, compiled twice.

``rnnt_numba`` compiles ``log_add`` with ``numba.njit`` (CPU kernels, ``rnnt_pruned``'s too) and
``rnnt_numba_cuda`` with ``numba.cuda.jit(device=True)``; the function itself runs as Python.
numba's on-disk cache keys a kernel by its own file: after an edit here, clear the
``__pycache__`` of the kernels' modules (or touch them) so that they recompile.
"""
from __future__ import annotations

import math

NEG_INF = -math.inf


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow; ``-inf`` is the additive identity."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))
