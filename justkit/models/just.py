"""The JUST model: conformer encoder + RNN-T, jointly trained with contrastive and MLM losses (justkit.losses.terms)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from justkit.config import ConfigError, from_dict
from justkit.losses.output import LossOutput
from justkit.losses.terms import (SUPERVISED, TERMS, UNSUPERVISED, LabelledPass, LossConfig, MaskedPass, TermInputs,
                                  head_names, logged_names)
from justkit.nn.conformer import ConformerConfig, ConformerStack, frozen_running_stats, lengths_to_valid
from justkit.nn.joint import Joint, JointConfig
from justkit.nn.masking import MaskingConfig, SpanMasker
from justkit.nn.predictor import Predictor, PredictorConfig
from justkit.nn.quantizer import LEGACY as QUANTIZER_LEGACY
from justkit.nn.quantizer import GumbelVectorQuantizer, QuantizerConfig
from justkit.nn.subsampling import Conv2dSubsampling, SubsamplingConfig

MODES = ("supervised", "pretrain", "just")
# What the unsupervised branch logs besides its terms (0 where it does not run)
QUANTIZER_STATS = ("codebook_perplexity", "gumbel_temperature", "code_entropy", "code_agreement")


@dataclass
class JUSTConfig:
    """Everything that defines a JUST model's architecture; ``model:`` in the experiment YAML.

    The loss it is trained with (which terms, their weights, the RNN-T loss and its
    normalisation) is the experiment's ``loss:`` section (justkit.losses.terms.LossConfig):
    loss = L_rnnt + w_u * (L_contrastive + w_div * L_diversity + w_mlm * L_mlm) (+ w_ctc * L_ctc).
    Modes: ``supervised`` (RNN-T only; encoder = contrastive + MLM blocks, no quantizer,
    masking or unsupervised heads are built), ``pretrain`` (w2v-BERT: unsupervised terms
    only, no predictor/joint built), ``just`` (both).
    """

    mode: str = "just"
    vocab_size: int = 256  # set by the trainer from the tokenizer; id 0 = blank
    feat_dim: int = 80     # set from the experiment's fbank options (num_mel_bins)
    d_model: int = 256
    subsampling: SubsamplingConfig = field(default_factory=SubsamplingConfig)
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    num_contrastive_blocks: int = 4  # w2v-BERT XL (Table 1): 12
    num_mlm_blocks: int = 4  # w2v-BERT XL (Table 1): 12
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    num_distractors: int = 100  # K (wav2vec 2.0: 100)
    kappa: float = 0.1  # contrastive temperature (wav2vec 2.0: 0.1)
    # Dimension both sides of the contrastive loss are projected to before the cosine:
    # context -> contrastive_proj, quantized target -> target_proj (fairseq's final_proj /
    # project_q, fairseq2's final_proj / final_target_proj). 0 = quantizer.code_dim.
    contrastive_dim: int = 0
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    # just mode: False = RNN-T reads a second, unmasked pass through the conformer blocks
    # (train = decode input distribution, at the cost of a second forward/backward through
    # the conformer stack; the frontend output is shared unless feats_sup is given);
    # True = RNN-T reads the masked pass (one pass, cheaper, but trains on inputs with
    # ~half the frames replaced by the mask embedding, which decoding never sees). Needs
    # conformer.conv_norm: layer, since batch-norm running statistics would then be
    # estimated on masked input only. The masked pass never updates running statistics
    # when an unmasked pass exists (nn.conformer.frozen_running_stats).
    rnnt_on_masked: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"model.mode must be one of {MODES}, got {self.mode!r}")
        if self.contrastive_dim < 0:
            raise ValueError(f"model.contrastive_dim must be >= 0, got {self.contrastive_dim}")
        if self.mode == "just" and self.rnnt_on_masked and self.conformer.conv_norm == "batch":
            raise ValueError(
                "model.rnnt_on_masked: true needs model.conformer.conv_norm: layer (with batch norm the "
                "running statistics that decoding uses would come from masked input only)")
        if self.vocab_size < 2:
            raise ValueError(f"model.vocab_size must be >= 2 (blank + tokens), got {self.vocab_size}")
        if self.feat_dim < 1:
            raise ValueError(f"model.feat_dim must be >= 1, got {self.feat_dim}")
        if self.d_model < 1 or self.num_contrastive_blocks < 0 or self.num_mlm_blocks < 0:
            raise ValueError("model.d_model must be >= 1 and block counts >= 0")
        if self.num_contrastive_blocks + self.num_mlm_blocks < 1:
            raise ValueError("model needs at least one conformer block")
        if self.mode != "supervised" and (self.num_contrastive_blocks < 1 or self.num_mlm_blocks < 1):
            raise ValueError(f"mode {self.mode!r} needs num_contrastive_blocks >= 1 and num_mlm_blocks >= 1")
        if self.num_distractors < 1 or self.kappa <= 0:
            raise ValueError("model.num_distractors must be >= 1 and model.kappa > 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "JUSTConfig":
        """Build from ``yaml["model"]``; unknown keys are errors (keys that moved to ``loss:`` say so)."""
        check_moved_keys(d, "model")
        return from_dict(cls, d, "model")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The passes this mode runs: ``supervised`` (RNN-T) and/or ``unsupervised`` (masked)."""
        return {"supervised": (SUPERVISED,), "pretrain": (UNSUPERVISED,), "just": (UNSUPERVISED, SUPERVISED)}[self.mode]


# model: keys of earlier justkit versions that live in the loss: section now
MOVED_TO_LOSS = {"w_u": "loss.w_u", "w_div": "loss.w_div", "w_mlm": "loss.w_mlm", "w_ctc": "loss.w_ctc",
                 "rnnt_backend": "loss.rnnt.backend", "rnnt_norm": "loss.rnnt.norm", "rnnt_loss": "loss.rnnt"}


def check_moved_keys(d: Mapping[str, Any] | None, where: str) -> None:
    """A ConfigError naming the new place of every loss key still under ``model:``."""
    moved = [k for k in (d or {}) if k in MOVED_TO_LOSS]
    if moved:
        raise ConfigError(f"{where}: {', '.join(f'model.{k} is now {MOVED_TO_LOSS[k]}' for k in moved)} "
                          f"(the experiment's loss: section, docs/interfaces.md \"Loss terms\")")


def migrate_legacy_config(config: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """An experiment config dict written by an earlier justkit (loss keys under ``model:``) in
    today's shape, and the keys moved; a config in today's shape comes back unchanged."""
    config = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    model = config.get("model")
    if not isinstance(model, dict):
        return config, []
    moved = []
    q = model.get("quantizer")
    if isinstance(q, Mapping) and not any(k in q for k in QUANTIZER_LEGACY):
        # a stored quantizer of before its input options: what it was (un-normalised projection)
        model["quantizer"] = {**q, **QUANTIZER_LEGACY}
        moved.append("quantizer.input (legacy: proj, no input_norm)")
    moved_loss = [k for k in MOVED_TO_LOSS if k in model]
    moved += moved_loss
    if not moved_loss:
        return config, moved
    loss = dict(config.get("loss") or {})
    rnnt = dict(model.pop("rnnt_loss", None) or {})
    for old, new in (("rnnt_backend", "backend"), ("rnnt_norm", "norm")):
        if old in model:
            rnnt[new] = model.pop(old)
    loss["rnnt"] = {**rnnt, **dict(loss.get("rnnt") or {})}
    for k in ("w_u", "w_div", "w_mlm", "w_ctc"):
        if k in model:
            loss.setdefault(k, model.pop(k))
    config["loss"] = loss
    return config, moved


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class JUSTModel(nn.Module):
    """See docs/interfaces.md "Model": ``forward(batch, step) -> LossOutput``, ``encode``, ``predictor``, ``joint``.

    ``loss_cfg`` (the experiment's ``loss:`` section) says which registered loss terms
    (justkit.losses.terms) the model computes and with which weights; each active term's heads
    are built here as attributes of the model (None where a term is off), in registry order.
    """

    blank_id = 0
    # The RNN-T's unmasked pass over every row, keeping the labelled ones (what justkit did before
    # 2026-12): for benchmarks/bench_train.py's before/after and the equality test; never faster.
    unmasked_all_rows = False

    def __init__(self, cfg: JUSTConfig, loss_cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.loss_cfg = loss_cfg = loss_cfg if loss_cfg is not None else LossConfig()
        d = cfg.d_model
        self.unsupervised = UNSUPERVISED in cfg.kinds
        self.supervised = SUPERVISED in cfg.kinds
        self.terms = loss_cfg.active(cfg.kinds)
        self.frontend = Conv2dSubsampling(cfg.feat_dim, d, cfg.subsampling)
        self.contrastive_blocks = ConformerStack(d, cfg.num_contrastive_blocks, cfg.conformer)
        self.mlm_blocks = ConformerStack(d, cfg.num_mlm_blocks, cfg.conformer)
        # the unsupervised branch (masker + quantizer), then its terms' heads; the RNN-T decoder,
        # then the supervised terms' heads (this order fixes the initial weights of a seed)
        self.masker = SpanMasker(d, cfg.masking) if self.unsupervised else None
        q_in = self.frontend.proj.in_features if cfg.quantizer.input == "features" else d
        self.quantizer = GumbelVectorQuantizer(q_in, cfg.quantizer) if self.unsupervised else None
        self._build_heads(UNSUPERVISED)
        self.predictor = Predictor(cfg.vocab_size, cfg.predictor) if self.supervised else None
        self.joint = Joint(d, self.predictor.output_dim, cfg.vocab_size, cfg.joint) if self.supervised else None
        self._build_heads(SUPERVISED)

    def _build_heads(self, kind: str) -> None:
        for term in TERMS.values():
            if term.kind != kind:
                continue
            on = term in self.terms
            for name, make in term.heads.items():
                setattr(self, name, make(self.cfg, self.loss_cfg) if on else None)

    # ---------------------------------------------------------------- encoder
    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval/decoding path, no masking: fbank [B, T, F] -> ([B, T', D], [B])."""
        x, lens = self.frontend(feats, feat_lens)
        valid = lengths_to_valid(lens, x.size(1))
        return self.mlm_blocks(self.contrastive_blocks(x, valid), valid), lens

    def decoder_parameter_prefixes(self) -> tuple[str, ...]:
        """Parameter-name prefixes of the RNN-T decoder and the supervised terms' heads: what
        load_pretrained_encoder never copies (everything else is the encoder side)."""
        return ("predictor.", "joint.", *(f"{h}." for h in head_names(SUPERVISED)))

    # ---------------------------------------------------------------- losses
    @staticmethod
    def _labelled_rows(batch: Mapping, n: int, dev: torch.device):
        """(rows, any labelled) of a batch. The loader puts labelled rows first and says how
        many (``num_labelled``): a slice, no host sync. Without it, ``labelled`` [B] bool (or
        every row) indexes the rows, which waits for the device once."""
        k = batch.get("num_labelled")
        if isinstance(k, int):
            return slice(0, k), k > 0
        labelled = batch.get("labelled")
        if labelled is None:
            return slice(0, n), n > 0
        rows = labelled.to(dev).bool()
        return rows, bool(rows.any())

    def _decoder_unused(self) -> torch.Tensor:
        # A batch without labelled rows: a zero that still touches every parameter the
        # unsupervised terms do not (all of them in supervised mode), so DDP sees
        # gradients (zeros) for all parameters.
        if not self.unsupervised:
            params = list(self.parameters())
        else:
            params = [p for n, p in self.named_parameters() if n.startswith(self.decoder_parameter_prefixes())]
        return sum(p.sum() for p in params) * 0.0

    def _masked_pass(self, x: torch.Tensor, q_in: torch.Tensor, lens: torch.Tensor, valid: torch.Tensor,
                     step: int) -> MaskedPass:
        """The unsupervised branch: quantize the unmasked features ``q_in``, mask ``x``, run the blocks."""
        qo = self.quantizer(q_in, valid, step)  # the unmasked features (QuantizerConfig.input)
        xm, mask = self.masker(x, lens)
        # The masked pass leaves the batch-norm running statistics to the unmasked pass
        # that the RNN-T reads (decoding sees unmasked input). Pre-training has no other pass.
        frozen = self.supervised and not self.cfg.rnnt_on_masked
        with frozen_running_stats(self) if frozen else contextlib.nullcontext():
            c = self.contrastive_blocks(xm, valid)
            m = self.mlm_blocks(c, valid)
        return MaskedPass(context=c, mlm_out=m, mask=mask & valid, quantized=qo, lens=lens)

    def forward(self, batch: Mapping[str, Any], step: int = 0) -> LossOutput:
        """Training losses for one batch: every registered term (0 where not computed), the
        quantizer's statistics, the weighted terms and their sum (see JUSTConfig for the modes)."""
        feats, feat_lens = batch["feats"], batch["feat_lens"]
        if feats.size(0) != feat_lens.numel():
            raise ValueError(f"batch: feats has {feats.size(0)} rows but feat_lens {feat_lens.numel()}")
        dev = feats.device
        zero = torch.zeros((), device=dev)
        logged: dict[str, torch.Tensor] = {k: zero for k in (*logged_names(), *QUANTIZER_STATS)}
        weighted: dict[str, torch.Tensor] = {}
        inputs = TermInputs(model=self, loss_cfg=self.loss_cfg, step=step)
        w = self.loss_cfg.weights
        front = num_frames = None

        def run(kind: str) -> None:
            for term in self.terms:
                if term.kind == kind:
                    value, extra = term.compute(inputs)
                    weighted[term.name] = term.scale(w) * value
                    logged[term.name] = value.detach()
                    logged.update(extra)

        if self.unsupervised:
            x, lens, conv, proj = self.frontend.forward_all(feats, feat_lens)
            valid = lengths_to_valid(lens, x.size(1))
            q_in = conv if self.cfg.quantizer.input == "features" else proj
            inputs.masked = mp = self._masked_pass(x, q_in, lens, valid, step)
            qo = mp.quantized
            logged.update(codebook_perplexity=qo.code_perplexity.detach(),
                          gumbel_temperature=torch.full((), qo.temperature, device=dev),
                          code_entropy=qo.code_entropy, code_agreement=qo.code_agreement)
            run(UNSUPERVISED)
            front, num_frames = (x, lens, valid), lens.sum()
        if self.supervised:
            rows, any_labelled = self._labelled_rows(batch, feats.size(0), dev)
            if any_labelled:
                missing = [k for k in ("tokens", "token_lens") if k not in batch]
                if missing:
                    raise KeyError(f"batch has labelled rows but no {missing}")
                sup = batch.get("feats_sup")
                if self.cfg.rnnt_on_masked and inputs.masked is not None:
                    enc, enc_lens = inputs.masked.mlm_out[rows], inputs.masked.lens[rows]
                elif sup is None and front is not None:
                    # second pass on the unmasked frontend output (the frontend is shared), over
                    # the labelled rows only: the RNN-T reads nothing else
                    x, lens, valid = front
                    if self.unmasked_all_rows:
                        enc = self.mlm_blocks(self.contrastive_blocks(x, valid), valid)[rows]
                    else:
                        enc = self.mlm_blocks(self.contrastive_blocks(x[rows], valid[rows]), valid[rows])
                    enc_lens = lens[rows]
                else:
                    enc, enc_lens = self.encode((feats if sup is None else sup)[rows], feat_lens[rows])
                    if num_frames is None:
                        num_frames = self.frontend.output_lengths(feat_lens).sum()
                inputs.labelled = LabelledPass(enc, enc_lens, batch["tokens"][rows], batch["token_lens"][rows])
                run(SUPERVISED)
            else:
                weighted["rnnt"] = self._decoder_unused()
                if num_frames is None:
                    num_frames = self.frontend.output_lengths(feat_lens).sum()
        return LossOutput(loss=sum(weighted.values()), terms=logged, weighted=weighted,
                          num_frames=num_frames.detach())

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared encoder every term trains: feature encoder + contrastive + MLM blocks
        (what gradient-balance and alignment monitors measure)."""
        return [p for m in (self.frontend, self.contrastive_blocks, self.mlm_blocks) for p in m.parameters()]

    encoder_parameters = shared_parameters

    # ---------------------------------------------------------------- utilities
    def load_pretrained_encoder(self, state_dict: Mapping[str, torch.Tensor], step: int | None = None) -> list[str]:
        """Copy every non-RNN-T weight present in ``state_dict`` (a model state dict or a
        checkpoint with a "model" entry; a DDP "module." prefix is stripped) into this model.

        Keys absent here (e.g. the quantizer when fine-tuning in supervised mode) are
        skipped; a shape mismatch or no key loaded at all is an error. Returns the loaded keys.
        ``step`` (the checkpoint's, or its "step" entry): a loaded quantizer continues its
        Gumbel temperature schedule after that many updates instead of restarting at temp_max.
        """
        if "model" in state_dict and isinstance(state_dict["model"], Mapping):
            if step is None and "step" in state_dict:
                step = int(state_dict["step"])
            state_dict = state_dict["model"]
        own = self.state_dict()
        skip = self.decoder_parameter_prefixes()
        loaded, bad = [], []
        with torch.no_grad():
            for k, v in state_dict.items():
                k = k[len("module."):] if k.startswith("module.") else k
                if k.startswith(skip) or k not in own:
                    continue
                if own[k].shape != v.shape:
                    bad.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
                    continue
                own[k].copy_(v)
                loaded.append(k)
        if bad:
            raise ConfigError(f"train.init: the pre-trained encoder does not fit this model config ({len(bad)} tensors): " + "; ".join(bad[:3]))
        if not loaded:
            raise ConfigError("train.init: no encoder weight of the pre-trained state dict matches this model")
        if self.quantizer is not None and any(k.startswith("quantizer.") for k in loaded):
            self.quantizer._sync_offset()
            if step:
                self.quantizer.set_step_offset(self.quantizer._offset + int(step))
        return loaded

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per part (every sub-module the model built) and in total."""
        counts = {name: count_parameters(m) for name, m in self.named_children()}
        counts["total"] = count_parameters(self)
        return counts
