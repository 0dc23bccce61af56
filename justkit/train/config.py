"""The ``train:`` section of an experiment: stop criterion, precision, logging, checkpoints, dev passes."""
from __future__ import annotations

import dataclasses

from justkit.config import ConfigError, from_dict
from justkit.train.optim import OptimConfig

AMP_MODES = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass
class TrainConfig:
    """The ``train:`` section of an experiment YAML.

    Steps are optimizer updates (one update = ``accum_grad`` batches per rank). Training stops
    at ``max_steps`` or after ``max_epochs`` epochs, whichever comes first (0 = no limit; at
    least one must be set). ``amp``: auto = bf16 autocast on CUDA, fp32 on CPU; fp16 adds a
    GradScaler. A batch whose loss or gradient is non-finite on any rank is skipped on all
    ranks; ``max_consecutive_skips`` in a row stop training with an error.
    """

    max_steps: int = 0
    max_epochs: int = 0
    accum_grad: int = 1
    clip_grad_norm: float = 5.0
    amp: str = "auto"
    seed: int = 0
    log_interval: int = 10           # steps between log lines / CSV rows
    save_interval: int = 0           # steps between checkpoints (0: only at epoch ends and the end)
    keep_last: int = 5               # checkpoints kept (0: all)
    keep_best: int = 0               # also keep the N best epoch-end checkpoints by best_metric on dev
    best_metric: str = "dev_wer"     # dev_wer (greedy, models with a decoder) or loss (the dev loss)
    average_last: int = 5            # default N of `justkit.bin.average`
    dev_interval: int = 0            # steps between dev evaluations besides each epoch end (0: none)
    epoch_end_interval: int = 1      # epochs between the epoch-end dev pass, checkpoint and plots (the end of
                                     # training always has them): a few labelled utterances make epochs of a few steps
    dev_max_frames: int = 0          # dev batch budget (0: data.max_frames)
    dev_wer: bool = True             # greedy dev WER at every dev evaluation (models with an RNN-T decoder)
    dev_wer_max_utts: int = 0        # per language, the first N dev utterances (0: all)
    max_consecutive_skips: int = 20
    # Steps between measurements of each loss term's share of the shared-encoder gradient
    # (one extra forward and one backward per term, on that step's first batch, outside the
    # update; 0 = never). Logged with the next log line, in train.csv and plots/grad_balance.png.
    grad_balance_interval: int = 0
    # Steps between measurements of each term's gradient alignment with the dev set's recognition
    # loss (justkit.train.alignment; docs/training.md, "Gradient alignment"): the cosine of its
    # shared-encoder gradient on that step's first batch with the grad_alignment_target term's
    # gradient on grad_alignment_batches fixed dev batches, and the first-order dev-loss change of
    # its Adam-scaled update (galign_<term>, gdev_<term> in train.csv). 0 = never. Needs a dev set.
    grad_alignment_interval: int = 0
    grad_alignment_batches: int = 4
    grad_alignment_target: str = "rnnt"
    # DDP: every mode gives every parameter a gradient on every batch (a batch without labels
    # touches the RNN-T part with a zero), so the extra graph walk is off by default
    find_unused_parameters: bool = False
    num_threads: int = 0             # torch intra-op threads on CPU (0: leave torch's default)
    plots: bool = True               # write plots/*.png at epoch ends and at the end
    tensorboard: bool = True         # TensorBoard event files in <exp>/tensorboard (every logged value)
    init: str = ""                   # checkpoint whose encoder initialises a fresh run (fine-tuning)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    restart: bool = False            # start over when checkpoints exist but none loads (they are moved aside, not deleted)

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = from_dict(OptimConfig, self.optim, "train.optim")
        if self.max_steps <= 0 and self.max_epochs <= 0:
            raise ConfigError("train: set max_steps and/or max_epochs (both are 0: training would never stop)")
        if self.accum_grad < 1:
            raise ConfigError(f"train.accum_grad must be >= 1, got {self.accum_grad}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train.amp: {self.amp!r} is not one of {AMP_MODES}")
        if self.log_interval < 1:
            raise ConfigError(f"train.log_interval must be >= 1, got {self.log_interval}")
        if self.best_metric not in ("dev_wer", "loss"):
            raise ConfigError(f"train.best_metric must be dev_wer or loss, got {self.best_metric!r}")
        if self.keep_best < 0:
            raise ConfigError(f"train.keep_best must be >= 0, got {self.keep_best}")
        if self.grad_balance_interval < 0:
            raise ConfigError(f"train.grad_balance_interval must be >= 0, got {self.grad_balance_interval}")
        if self.epoch_end_interval < 1:
            raise ConfigError(f"train.epoch_end_interval must be >= 1, got {self.epoch_end_interval}")
        if self.grad_alignment_interval < 0 or self.grad_alignment_batches < 1:
            raise ConfigError("train.grad_alignment_interval must be >= 0 and train.grad_alignment_batches >= 1, "
                              f"got {self.grad_alignment_interval}, {self.grad_alignment_batches}")
