"""The trainer's contract (docs/interfaces.md, "Trainer contract"): what it needs of a model and of
the task that builds it, and nothing else. justkit.train.trainer.Trainer relies on these alone;
justkit.train.asr.ASRTask is the speech recogniser's task.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Protocol, runtime_checkable

import torch
from torch import nn

from justkit.losses.output import LossOutput
from justkit.train.config import TrainConfig
from justkit.train.distributed import DistInfo

__all__ = ["LossOutput", "TrainModel", "Loader", "TrainTask"]


@runtime_checkable
class TrainModel(Protocol):
    """A model the trainer can train: ``forward(batch, step)`` returns a LossOutput."""

    def __call__(self, batch: Mapping[str, Any], step: int = 0) -> LossOutput: ...

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every loss term trains (the shared encoder of JUST): what the gradient
        balance and alignment monitors differentiate each term on."""
        ...


class Loader(Protocol):
    """A resumable loader of dict batches (each with an ``utts`` list): justkit.data.loader's."""

    batch_sampler: Any  # len() = batches left in this epoch; epoch_batches() = the whole epoch's batches

    def __iter__(self) -> Iterator[dict]: ...

    @property
    def epoch(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class TrainTask(Protocol):
    """What is trained, and on what: the trainer asks a task, never the model, what it is."""

    config: dict          # the resolved experiment config, stored in every checkpoint
    train: TrainConfig    # the train: section (stop criterion, precision, logging, checkpoints)

    def build_model(self) -> nn.Module:
        """A fresh model (a TrainModel) on the CPU; the trainer seeds the RNGs before calling it."""
        ...

    def train_loader(self, dist: DistInfo, pin_memory: bool) -> Loader:
        """This rank's shard of the training set (built once)."""
        ...

    def dev_loader(self, dist: DistInfo, pin_memory: bool) -> Optional[Loader]:
        """This rank's shard of the dev set, or None (no dev passes)."""
        ...

    def batch_frames(self, batch: Mapping[str, Any]) -> int:
        """The host-side size of a batch that throughput is counted in (input frames, tokens);
        raises ValueError (naming the batch's utterances) for a batch the model cannot take."""
        ...

    def to_device(self, batch: Mapping[str, Any], device: torch.device) -> dict:
        """The batch on the training device (features computed there where the task does that)."""
        ...

    def dev_metrics(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Rank 0's extra dev figures after the dev-loss pass (greedy WER per language, perplexity, ...)."""
        ...

    def plot_references(self) -> dict[str, tuple[float, str]]:
        """Horizontal reference lines for the plots of logged columns: ``{column: (value, label)}``
        (e.g. the codebook size on ``codebook_perplexity``); {} for none."""
        ...

    def init_from(self, model: nn.Module, path: str) -> None:
        """Initialise a fresh run's model from checkpoint ``path`` (``train.init``)."""
        ...
