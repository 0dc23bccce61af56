"""Loss terms, named once: the registry every part that lists terms reads, and the ``loss:`` section.

A :class:`LossTerm` says what a term is called, which pass of the model it reads (the RNN-T
encoder output of the labelled rows, or the masked pass of the unsupervised branch), how it is
computed, which weights of ``loss:`` scale it (with their ranges), which heads (modules) it
owns, what else it logs, and its FLOPs. The model builds the heads and computes the active
terms in registry order; the training curves, TensorBoard, the FLOPs count, the experiment
config and docs/interfaces.md (checked by a test) all read :data:`TERMS`.

Adding a term: write its loss function (a module of ``justkit.losses``), :func:`register` a
``LossTerm`` here (or from your own code, before the experiment is resolved), give its weight
key in the experiment's ``loss:`` section. docs/interfaces.md, "Loss terms", has a worked example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from justkit.config import ConfigError, from_dict
from justkit.losses.contrastive import contrastive_loss
from justkit.losses.mlm import mlm_loss
from justkit.losses.transducer import RNNTLossConfig, normaliser, transducer_loss

SUPERVISED, UNSUPERVISED = "supervised", "unsupervised"


@dataclass(frozen=True)
class Weight:
    """One key of the ``loss:`` section: its default and its allowed range (both ends included)."""

    key: str
    default: float
    lo: float = 0.0
    hi: float = math.inf
    doc: str = ""


@dataclass
class MaskedPass:
    """What the unsupervised terms read: the encoder over masked input and the quantizer's targets."""

    context: torch.Tensor     # [B, T', D] contrastive blocks' output over the masked input
    mlm_out: torch.Tensor     # [B, T', D] MLM blocks' output
    mask: torch.Tensor        # [B, T'] bool: the masked (and valid) frames
    quantized: Any            # justkit.nn.quantizer.QuantizerOutput of the unmasked input
    lens: torch.Tensor        # [B] encoder frames


@dataclass
class LabelledPass:
    """What the supervised terms read: the (unmasked) encoder output of the labelled rows."""

    enc: torch.Tensor         # [B_l, T', D]
    enc_lens: torch.Tensor    # [B_l]
    tokens: torch.Tensor      # [B_l, U]
    token_lens: torch.Tensor  # [B_l]


@dataclass
class TermInputs:
    """Everything a term's ``compute`` may read of one forward: the model (its config ``cfg``, its
    heads), the loss config, the update number, and the pass of the term's kind."""

    model: nn.Module
    loss_cfg: "LossConfig"
    step: int
    masked: Optional[MaskedPass] = None
    labelled: Optional[LabelledPass] = None


Compute = Callable[[TermInputs], Tuple[torch.Tensor, Dict[str, torch.Tensor]]]
HeadFactory = Callable[[Any, "LossConfig"], Optional[nn.Module]]


@dataclass(frozen=True)
class LossTerm:
    """One term of the training loss (see the module docstring)."""

    name: str                 # the train.csv column / TensorBoard tag of its (unweighted) value
    kind: str                 # SUPERVISED (labelled rows' encoder output) or UNSUPERVISED (masked pass)
    compute: Compute          # -> (unweighted value, 0-dim tensor with graph; extra logged values)
    scale: Callable[[Mapping[str, float]], float]  # the loss weights -> the factor it enters the loss with
    weights: Tuple[Weight, ...] = ()              # the loss: keys it declares
    heads: Mapping[str, HeadFactory] = field(default_factory=dict)  # attribute name -> module (None: not built)
    metrics: Tuple[str, ...] = ()                 # extra values it logs (0 when not computed)
    enabled: Callable[["LossConfig"], bool] = lambda cfg: True  # off for this config (no heads, no value)
    flops: Optional[Callable[[Any, "LossConfig", int, int], float]] = None  # forward FLOPs (cfg, loss, T', U)
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (SUPERVISED, UNSUPERVISED):
            raise ValueError(f"loss term {self.name!r}: kind must be {SUPERVISED!r} or {UNSUPERVISED!r}")


TERMS: Dict[str, LossTerm] = {}


def register(term: LossTerm) -> LossTerm:
    """Add ``term`` to the registry (its name and weight keys must be new)."""
    if term.name in TERMS:
        raise ValueError(f"loss term {term.name!r} is registered already")
    keys = weight_specs()
    clash = [w.key for w in term.weights if w.key in keys or w.key == "rnnt"]
    if clash:
        raise ValueError(f"loss term {term.name!r}: weight key(s) {clash} are declared already")
    TERMS[term.name] = term
    return term


def unregister(name: str) -> None:
    """Remove a term (tests and plug-ins that register their own)."""
    TERMS.pop(name, None)


def weight_specs() -> Dict[str, Weight]:
    """Every weight key of the registered terms (a key shared by several terms is declared once)."""
    return {w.key: w for t in TERMS.values() for w in t.weights}


def logged_names() -> Tuple[str, ...]:
    """The values a model's forward logs for the registered terms: each term and its metrics."""
    return tuple(n for t in TERMS.values() for n in (t.name, *t.metrics))


def head_names(kind: Optional[str] = None) -> Tuple[str, ...]:
    """Attribute names of the terms' heads (of one ``kind``, or all)."""
    return tuple(h for t in TERMS.values() if kind in (None, t.kind) for h in t.heads)


# ------------------------------------------------------------------------------ the loss: section


class LossConfig:
    """The experiment's ``loss:`` section: ``rnnt:`` (justkit.losses.transducer.RNNTLossConfig) and
    the weights of the registered terms (``w_u``, ``w_div``, ``w_mlm``, ``w_ctc``, ...), each
    checked against its range. Weights read as attributes: ``cfg.w_u``."""

    def __init__(self, rnnt: Optional[RNNTLossConfig] = None, **weights: float) -> None:
        specs = weight_specs()
        unknown = sorted(set(weights) - set(specs))
        if unknown:
            raise ConfigError(f"loss: unknown key(s) {unknown}; known: {sorted(['rnnt', *specs])}")
        self.rnnt = rnnt if rnnt is not None else RNNTLossConfig()
        self.weights: Dict[str, float] = {}
        for key, spec in specs.items():
            val = weights.get(key, spec.default)
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ConfigError(f"loss.{key}: expected a number, got {val!r}")
            val = float(val)
            if not (math.isfinite(val) and spec.lo <= val <= spec.hi):
                raise ConfigError(f"loss.{key} must lie in [{spec.lo}, {spec.hi}], got {val}")
            self.weights[key] = val

    def __getattr__(self, name: str) -> float:
        weights = self.__dict__.get("weights", {})
        if name in weights:
            return weights[name]
        raise AttributeError(f"LossConfig has no weight or field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"LossConfig({self.to_dict()})"

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]], where: str = "loss") -> "LossConfig":
        """From ``yaml["loss"]``; unknown keys and out-of-range weights are ConfigErrors."""
        if d is not None and not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {d!r}")
        d = dict(d or {})
        rnnt = d.pop("rnnt", None)
        if rnnt is not None and not isinstance(rnnt, (Mapping, RNNTLossConfig)):
            raise ConfigError(f"{where}.rnnt: expected a mapping of RNNTLossConfig keys, got {rnnt!r}")
        if isinstance(rnnt, Mapping) or rnnt is None:
            rnnt = from_dict(RNNTLossConfig, rnnt, f"{where}.rnnt")
        for k, v in d.items():
            if isinstance(v, str):  # YAML 1.1 reads 3e-1 as a string
                try:
                    d[k] = float(v)
                except ValueError:
                    raise ConfigError(f"{where}.{k}: expected a number, got {v!r}") from None
        return cls(rnnt, **d)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**self.weights, "rnnt": asdict(self.rnnt)}

    def active(self, mode_kinds: Tuple[str, ...]) -> Tuple[LossTerm, ...]:
        """The terms a model with passes of ``mode_kinds`` computes under this config, in registry order."""
        return tuple(t for t in TERMS.values() if t.kind in mode_kinds and t.enabled(self))


# ------------------------------------------------------------------------------ JUST's terms


def _contrastive(inp: TermInputs):
    m, model = inp.masked, inp.model
    cfg = model.cfg
    loss, info = contrastive_loss(model.contrastive_proj(m.context), model.target_proj(m.quantized.quantized), m.mask,
                                  cfg.num_distractors, cfg.kappa, codes=m.quantized.ids)
    return loss, {"contrastive_acc": torch.as_tensor(info["accuracy"], device=m.context.device)}


def _diversity(inp: TermInputs):
    return inp.masked.quantized.diversity_loss, {}


def _mlm(inp: TermInputs):
    m, model = inp.masked, inp.model
    q = model.cfg.quantizer
    logits = model.mlm_head(m.mlm_out).view(m.mlm_out.size(0), m.mlm_out.size(1), q.groups, q.entries)
    loss, info = mlm_loss(logits, m.quantized.ids, m.mask)
    return loss, {"mlm_acc": torch.as_tensor(info["accuracy"], device=m.mlm_out.device)}


def _rnnt(inp: TermInputs):
    lab, model = inp.labelled, inp.model
    simple = (model.simple_am_proj, model.simple_lm_proj) if model.simple_am_proj is not None else None
    return transducer_loss(inp.loss_cfg.rnnt, lab.enc, lab.enc_lens, lab.tokens, lab.token_lens, model.predictor,
                           model.joint, simple, inp.step, model.blank_id)


def _ctc(inp: TermInputs):
    """Auxiliary CTC (blank 0), normalised as the RNN-T loss; utterances too short for their labels count 0."""
    lab, model = inp.labelled, inp.model
    logp = model.ctc_head(lab.enc).float().log_softmax(-1).transpose(0, 1)  # [T, B, V]
    loss = torch.nn.functional.ctc_loss(logp, lab.tokens, lab.enc_lens, lab.token_lens, blank=model.blank_id,
                                        reduction="sum", zero_infinity=True)
    return loss / normaliser(inp.loss_cfg.rnnt.norm, lab.enc_lens, lab.token_lens), {}


def _contrastive_dim(cfg) -> int:
    return cfg.contrastive_dim or cfg.quantizer.code_dim


def _rnnt_flops(cfg, loss: LossConfig, t: int, u: int) -> float:
    p, j, v = cfg.predictor, cfg.joint.joint_dim, cfg.vocab_size
    u1 = u + 1
    fwd = u1 * p.num_layers * 2 * 4 * p.hidden_dim * (p.embed_dim + p.hidden_dim)  # LSTM (embed ~ hidden)
    fwd += 2 * t * cfg.d_model * j + 2 * u1 * p.hidden_dim * j                        # joint projections
    pruned = loss.rnnt.type == "pruned"
    fwd += 2 * t * (loss.rnnt.s_range if pruned else u1) * j * v                      # joint output layer
    if pruned:
        fwd += 2 * t * cfg.d_model * v + 2 * u1 * p.hidden_dim * v + 2 * t * u1 * v   # simple loss
    return float(fwd)


def _pruned_proj(dim_of: Callable[[Any], int]) -> HeadFactory:
    """The pruned loss's trivial joiner: one side (encoder or prediction network) projected to the vocabulary."""
    return lambda cfg, loss: nn.Linear(dim_of(cfg), cfg.vocab_size) if loss.rnnt.type == "pruned" else None


register(LossTerm(
    "contrastive", UNSUPERVISED, _contrastive, scale=lambda w: w["w_u"],
    weights=(Weight("w_u", 1.0, doc="the unsupervised loss in JUST (per frame, see loss.rnnt.norm)"),),
    heads={"contrastive_proj": lambda cfg, loss: nn.Linear(cfg.d_model, _contrastive_dim(cfg)),
           "target_proj": lambda cfg, loss: nn.Linear(cfg.quantizer.code_dim, _contrastive_dim(cfg))},
    metrics=("contrastive_acc",),
    flops=lambda cfg, loss, t, u: float(2 * t * cfg.d_model * _contrastive_dim(cfg)
                                        + 2 * t * cfg.quantizer.code_dim * _contrastive_dim(cfg)),
    doc="wav2vec 2.0 contrastive loss: context vs the quantized target among K distractors"))
register(LossTerm(
    "diversity", UNSUPERVISED, _diversity, scale=lambda w: w["w_u"] * w["w_div"],
    weights=(Weight("w_div", 0.1, doc="codebook diversity (wav2vec 2.0: alpha = 0.1), times w_u"),),
    doc="wav2vec 2.0 codebook diversity loss, (GV - perplexity) / GV"))
register(LossTerm(
    "mlm", UNSUPERVISED, _mlm, scale=lambda w: w["w_u"] * w["w_mlm"],
    weights=(Weight("w_mlm", 1.0, doc="masked prediction relative to contrastive (w2v-BERT: beta = 1), times w_u"),),
    heads={"mlm_head": lambda cfg, loss: nn.Linear(cfg.d_model, cfg.quantizer.groups * cfg.quantizer.entries)},
    metrics=("mlm_acc",),
    flops=lambda cfg, loss, t, u: float(2 * t * cfg.d_model * cfg.quantizer.groups * cfg.quantizer.entries),
    doc="w2v-BERT masked prediction: cross-entropy on the quantizer's code ids at masked frames"))
register(LossTerm(
    "rnnt", SUPERVISED, _rnnt, scale=lambda w: 1.0,
    heads={"simple_am_proj": _pruned_proj(lambda cfg: cfg.d_model),
           "simple_lm_proj": _pruned_proj(lambda cfg: cfg.predictor.hidden_dim)},
    flops=_rnnt_flops,
    doc="RNN-T negative log-likelihood (loss.rnnt: full or pruned, its kernel and normalisation)"))
register(LossTerm(
    "ctc", SUPERVISED, _ctc, scale=lambda w: w["w_ctc"],
    weights=(Weight("w_ctc", 0.0, doc="auxiliary CTC head on the encoder (not part of JUST; 0 = no head)"),),
    heads={"ctc_head": lambda cfg, loss: nn.Linear(cfg.d_model, cfg.vocab_size)},
    enabled=lambda loss: loss.w_ctc > 0,
    flops=lambda cfg, loss, t, u: float(2 * t * cfg.d_model * cfg.vocab_size),
    doc="auxiliary CTC on the RNN-T encoder output, normalised as the RNN-T loss"))
