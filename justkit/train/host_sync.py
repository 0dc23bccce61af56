"""Find the places where a training step makes the host wait for the device.

On a GPU, ``torch.cuda.set_sync_debug_mode("warn")`` reports every synchronising call
(benchmarks/gpu_check.sh uses it). On a CPU nothing ever waits, so :class:`HostSyncCounter`
flags what *would* wait on a GPU: the Python-level calls that read a tensor's value or a
data-dependent size on the host (``.item()``, ``bool()``/``int()``/``float()`` of a tensor,
``.tolist()``, ``.numpy()``, ``.cpu()``, ``nonzero``, boolean-mask indexing, ...). It cannot
see syncs inside ATen operators (e.g. ``F.ctc_loss`` with tensor lengths, torchaudio's
``rnnt_loss`` length checks); docs/training.md lists those.
"""
from __future__ import annotations

import traceback
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
    torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
    torch.Tensor.nonzero, torch.nonzero, torch.Tensor.unique, torch.unique, torch.masked_select,
    torch.Tensor.masked_select, torch.Tensor.any, torch.Tensor.all,
}


def _is_bool_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in items)


class HostSyncCounter(TorchFunctionMode):
    """``with HostSyncCounter() as c: step()``; ``c.count``, ``c.sites`` (Counter of
    "file:line func" of the caller, outside torch). ``.any()``/``.all()`` count only when their
    result is then read on the host (``bool(...)``), which is where the wait happens; they are
    listed in ``_READS`` so their call site shows, and ``count`` excludes them."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter = Counter()
        self.count = 0

    def _site(self) -> str:
        for fr in reversed(traceback.extract_stack()[:-2]):  # minus this frame and __torch_function__
            if "/torch/" not in fr.filename and not fr.filename.endswith("host_sync.py"):
                return f"{fr.filename.rsplit('/justkit/', 1)[-1]}:{fr.lineno} {fr.name}"
        return "?"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = func in _READS and func not in (torch.Tensor.any, torch.Tensor.all)
        if func is torch.Tensor.__getitem__ and len(args) > 1 and _is_bool_index(args[1]):
            hit = True
        if func is torch.Tensor.to and args and torch.is_tensor(args[0]) and args[0].device.type != "cpu":
            hit = any(isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu" for a in args[1:])
        if hit:
            self.count += 1
            self.sites[self._site()] += 1
        return func(*args, **kwargs)
