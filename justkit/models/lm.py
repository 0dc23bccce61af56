"""Token-level neural language model over the ASR vocabulary: training loss and step-wise scoring.

Sentences are scored as ``P(y_1 .. y_U, </s>)`` with id 0 (the RNN-T blank, which never occurs
in text) as the sentence boundary: the input is ``0 y_1 .. y_U``, the target ``y_1 .. y_U 0``,
as the prediction network starts from the blank id. Step by step (the searches' shallow
fusion): ``state = lm.init_state(n)``, then ``logp, state = lm.score(tokens [N], state)`` gives
``log P(. | history)`` [N, V] after feeding ``tokens``; the state is a tuple of tensors with the
batch on dim 1, as the prediction network's (``justkit.decode.hyp.state_index`` works on both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from justkit.config import from_dict
from justkit.errors import JustkitError
from justkit.models.factory import CheckpointError, load_checkpoint

from justkit.losses.output import LossOutput

ARCHS = ("lstm", "transformer")
BOUNDARY = 0   # sentence start and end: the blank id of the vocabulary


class LMError(JustkitError, ValueError):
    """A language model that cannot be used as asked (wrong vocabulary, not an LM); names the file."""


class FusionError(JustkitError, ValueError):
    """A fusion weight or LM that cannot be used (negative/non-finite weight, no LM to fuse)."""


def check_weight(name: str, value: Any) -> float:
    """``value`` as a float if finite and >= 0, else a one-line FusionError naming ``name``
    (the weights an LM is fused with: decoding, packing, transcribing)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FusionError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise FusionError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


@dataclass
class LMConfig:
    """The ``model:`` section of an LM experiment (``conf/lm/*.yaml``).

    arch: ``lstm`` (embedding + LSTM stack + output layer, as the RNN-T prediction network) or
        ``transformer`` (causal pre-norm Transformer of ``num_layers`` blocks, width ``hidden_dim``,
        ``num_heads`` heads, ``ffn_dim`` feed-forward, learned positions up to ``max_len`` tokens;
        step by step it re-reads the history, and a history longer than ``max_len`` keeps its
        last ``max_len`` tokens).
    vocab_size: the sentencepiece vocabulary (filled in from the tokenizer; must equal the ASR model's).
    tie_weights: share the embedding and the output layer (needs embed_dim == hidden_dim).
    """

    arch: str = "lstm"
    vocab_size: int = 0
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.1
    tie_weights: bool = False
    num_heads: int = 4               # transformer only
    ffn_dim: int = 1024              # transformer only
    max_len: int = 256               # transformer only: positions

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.vocab_size < 0 or min(self.embed_dim, self.hidden_dim, self.num_layers) < 1:
            raise ValueError(f"LMConfig: sizes must be >= 1 (vocab_size >= 0), got {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.embed_dim != self.hidden_dim:
            raise ValueError("model.tie_weights needs embed_dim == hidden_dim")
        if self.arch == "transformer" and (self.hidden_dim % max(self.num_heads, 1) or min(self.num_heads, self.ffn_dim, self.max_len) < 1):
            raise ValueError(f"model: a transformer needs num_heads dividing hidden_dim and ffn_dim, max_len >= 1, got {self}")

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "LMConfig":
        return from_dict(cls, d, "model")


class TokenLM(nn.Module):
    """Token LM (LSTM or Transformer): ``forward(batch, step) -> LossOutput`` (mean NLL per token,
    boundary included); ``init_state``/``score`` step by step for the searches."""

    boundary_id = BOUNDARY

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 2:
            raise ValueError(f"model.vocab_size must be >= 2 (set from the tokenizer), got {cfg.vocab_size}")
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.arch == "lstm":
            self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, batch_first=True,
                                dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        else:
            self.in_proj = nn.Linear(cfg.embed_dim, cfg.hidden_dim) if cfg.embed_dim != cfg.hidden_dim else nn.Identity()
            self.pos = nn.Embedding(cfg.max_len, cfg.hidden_dim)
            layer = nn.TransformerEncoderLayer(cfg.hidden_dim, cfg.num_heads, cfg.ffn_dim, cfg.dropout,
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.out = nn.Linear(cfg.hidden_dim, cfg.vocab_size)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight

    # ------------------------------------------------------------------ training
    def logits(self, tokens: torch.Tensor, state=None) -> Tuple[torch.Tensor, Any]:
        """tokens [B, U] long -> (logits [B, U, V], state); the transformer reads ``tokens`` as
        whole sentences from their start (``state`` is for the LSTM only)."""
        if self.cfg.arch == "lstm":
            h, state = self.lstm(self.dropout(self.embed(tokens)), state)
            return self.out(self.dropout(h)), state
        U = tokens.shape[1]
        pos = torch.arange(U, device=tokens.device).clamp(max=self.cfg.max_len - 1)
        x = self.dropout(self.in_proj(self.embed(tokens)) + self.pos(pos)[None])
        causal = torch.triu(torch.full((U, U), float("-inf"), device=tokens.device), 1)
        h = self.norm(self.blocks(x, mask=causal))
        return self.out(self.dropout(h)), None

    def forward(self, batch: Mapping[str, Any], step: int = 0) -> LossOutput:
        """``batch["tokens"]`` [B, U] (padded with 0) and ``batch["token_lens"]`` [B]: the loss is
        the mean negative log-likelihood per predicted token (the U tokens and the end boundary)."""
        tokens, lens = batch["tokens"], batch["token_lens"]
        inp, tgt, mask = lm_io(tokens, lens)
        logits, _ = self.logits(inp)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
        n = mask.sum()
        loss = (nll * mask).sum() / n.clamp(min=1)
        return LossOutput(loss=loss, terms={"nll": loss.detach()}, weighted={"nll": loss},
                          num_frames=n.detach())

    def shared_parameters(self) -> List[nn.Parameter]:
        """What gradient-balance tools measure: every parameter (one loss term)."""
        return list(self.parameters())

    # ------------------------------------------------------------------ scoring
    def init_state(self, n: int, device: torch.device | str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
        """The empty-history state of ``n`` sentences (feed the boundary id next): the LSTM's
        (h, c) [L, n, H]; the transformer's history (token ids [1, n, max_len], lengths [1, n])."""
        if self.cfg.arch == "lstm":
            z = torch.zeros(self.cfg.num_layers, n, self.cfg.hidden_dim, device=device)
            return (z, z.clone())
        return (torch.zeros(1, n, self.cfg.max_len, dtype=torch.long, device=device),
                torch.zeros(1, n, dtype=torch.long, device=device))

    def score(self, tokens: torch.Tensor, state) -> Tuple[torch.Tensor, Any]:
        """Feed ``tokens`` [N] (one per sentence) -> (log P(next | history) [N, V], new state)."""
        if self.cfg.arch == "lstm":
            logits, state = self.logits(tokens.view(-1, 1), state)
            return logits[:, 0].float().log_softmax(-1), state
        hist, lens = state[0][0], state[1][0]
        full = lens >= self.cfg.max_len                       # keep the last max_len tokens
        hist = torch.where(full[:, None], hist.roll(-1, 1), hist)
        lens = lens.clamp(max=self.cfg.max_len - 1)
        hist = hist.scatter(1, lens[:, None], tokens.view(-1, 1))
        lens = lens + 1
        n = int(lens.max())
        logits, _ = self.logits(hist[:, :n])                  # causal: the padding after a row's end is unseen
        last = logits.gather(1, (lens - 1).view(-1, 1, 1).expand(-1, 1, logits.shape[-1]))[:, 0]
        return last.float().log_softmax(-1), (hist[None], lens[None])

    @torch.no_grad()
    def sequence_logprob(self, seqs: Sequence[Sequence[int]], eos: bool = False,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """log P(y_1 .. y_U [, </s>]) of each sequence, in one padded pass: [N] float64."""
        device = device or next(self.parameters()).device
        if not seqs:
            return torch.zeros(0, dtype=torch.float64)
        lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        tokens = torch.zeros(len(seqs), max(1, int(lens.max())), dtype=torch.long)
        for i, s in enumerate(seqs):
            if len(s):
                tokens[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        inp, tgt, mask = lm_io(tokens, lens)
        if not eos:  # leave out the end boundary
            mask = mask & (torch.arange(tgt.shape[1])[None] < lens[:, None])
        logits, _ = self.logits(inp.to(device))
        lp = logits.float().log_softmax(-1).gather(-1, tgt.to(device)[..., None])[..., 0]
        return (lp.double() * mask.to(device)).sum(1).cpu()


def lm_io(tokens: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ``0 y``, target ``y 0``, mask of the U+1 real targets) of padded ``tokens`` [B, U]."""
    B = tokens.shape[0]
    lens = lens.to(tokens.device)
    pad = torch.zeros(B, 1, dtype=tokens.dtype, device=tokens.device)
    inp = torch.cat([pad, tokens], 1)                           # [B, U+1]
    tgt = torch.cat([tokens, pad], 1)
    pos = torch.arange(tgt.shape[1], device=tokens.device)[None]
    tgt = torch.where(pos < lens[:, None], tgt, torch.zeros_like(tgt))   # the boundary after y_U
    mask = pos <= lens[:, None]
    return inp, tgt, mask


def build_lm(cfg: Mapping[str, Any] | LMConfig) -> TokenLM:
    """The LM a ``model:`` section describes."""
    return TokenLM(cfg if isinstance(cfg, LMConfig) else LMConfig.from_dict(cfg))


def is_lm_config(config: Mapping[str, Any]) -> bool:
    """True for the experiment dict of an LM (``task: lm``)."""
    return isinstance(config, Mapping) and config.get("task") == "lm"


def lm_weights_path(lm_dir: str | Path) -> Path:
    """The weights of an LM directory: ``model_avg.pt`` of ``exp/lm_<tag>`` or ``model.pt`` of a packed ``lm/``."""
    d = Path(lm_dir)
    if d.is_file():
        return d
    for name in ("model.pt", "model_avg.pt"):
        if (d / name).is_file():
            return d / name
    if not d.is_dir():
        raise LMError(f"{d}: no such LM directory (exp/lm_<tag> or a packed model's lm/)")
    raise LMError(f"{d}: holds neither model_avg.pt (average the LM's checkpoints) nor model.pt")


def load_lm(lm_dir: str | Path, device: torch.device | str = "cpu",
            vocab_size: Optional[int] = None) -> Tuple[TokenLM, dict, Path]:
    """(LM in eval mode on ``device``, its experiment dict, the weights file) of an LM directory or
    file. ``vocab_size``: the ASR model's; an LM over another vocabulary is refused naming both."""
    path = lm_weights_path(lm_dir)
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if not is_lm_config(config):
        raise LMError(f"{path}: not a language model (its config has no 'task: lm'; an ASR model?)")
    lm = build_lm(config["model"])
    try:
        lm.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the LM its config describes: {e}") from e
    if vocab_size is not None and int(vocab_size) != lm.vocab_size:
        raise LMError(f"{path}: the LM's vocabulary has {lm.vocab_size} pieces, the ASR model's "
                      f"{int(vocab_size)}: an LM must be trained on the ASR model's tokenizer")
    return lm.to(device).eval(), config, path
