"""The JUST model: conformer encoder + RNN-T, jointly trained with contrastive and MLM losses."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from justkit.config import ConfigError, from_dict
from justkit.losses.contrastive import contrastive_loss
from justkit.losses.mlm import mlm_loss
from justkit.losses.rnnt import BACKENDS, rnnt_loss
from justkit.losses.rnnt_pruned import RNNTLossConfig, chunked_rnnt_costs, pruned_rnnt_nll
from justkit.nn.conformer import ConformerConfig, ConformerStack, frozen_running_stats, lengths_to_valid
from justkit.nn.joint import Joint, JointConfig
from justkit.nn.masking import MaskingConfig, SpanMasker
from justkit.nn.predictor import Predictor, PredictorConfig
from justkit.nn.quantizer import GumbelVectorQuantizer, QuantizerConfig
from justkit.nn.subsampling import Conv2dSubsampling, SubsamplingConfig

MODES = ("supervised", "pretrain", "just")
RNNT_NORMS = ("frame", "token", "utterance")
# Parameter-name prefixes of the RNN-T decoder; everything else is "the encoder" that
# load_pretrained_encoder copies from a pre-trained (w2v-BERT or JUST) checkpoint.
RNNT_PREFIXES = ("predictor.", "joint.", "ctc_head.", "simple_am_proj.", "simple_lm_proj.")


@dataclass
class JUSTConfig:
    """Everything that defines a JUST model; ``model:`` in the experiment YAML.

    Loss (Bai et al. 2022, JUST): loss = L_rnnt + w_u * (L_contrastive + w_div * L_diversity + w_mlm * L_mlm),
    plus ``w_ctc * L_ctc`` when the optional auxiliary CTC head is on (not part of JUST).

    Normalisation (the paper does not give it): the contrastive, diversity and MLM terms
    are means over masked frames (wav2vec 2.0 / w2v-BERT); ``rnnt_norm`` says what the
    RNN-T (and CTC) negative log-likelihood, summed over the labelled utterances of the
    batch, is divided by: ``frame`` (default) = their encoder frames, so every term is a
    per-frame quantity and ``w_u`` weighs the unsupervised frames against the supervised
    ones one to one; ``token`` = their label tokens (fairseq's CTC/ASR convention);
    ``utterance`` = their number (torchaudio's "mean", ESPnet). With ``utterance`` the
    RNN-T gradient on the shared encoder is ~T' (tens to hundreds) times that of the
    unsupervised terms, and JUST is RNN-T alone in all but name (docs/training.md).
    Modes: ``supervised`` (RNN-T only; encoder = contrastive + MLM blocks, no quantizer,
    masking or unsupervised heads are built), ``pretrain`` (w2v-BERT: unsupervised terms
    only, no predictor/joint built), ``just`` (both).
    """

    mode: str = "just"
    vocab_size: int = 256  # set by the trainer from the tokenizer; id 0 = blank
    feat_dim: int = 80
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
    w_u: float = 1.0  # weight of the unsupervised loss in JUST (per frame, see rnnt_norm)
    w_div: float = 0.1  # diversity loss weight (wav2vec 2.0: alpha = 0.1)
    w_mlm: float = 1.0  # MLM weight relative to contrastive (w2v-BERT: beta = 1)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    rnnt_backend: str = "torchaudio"
    # Which RNN-T loss: full (the [B, T', U+1, V] joint; chunk_utts bounds its memory) or pruned
    # (k2's pruned RNN-T: a simple loss plus the joint on s_range label positions per frame).
    rnnt_loss: RNNTLossConfig = field(default_factory=RNNTLossConfig)
    rnnt_norm: str = "frame"  # frame | token | utterance: what the summed RNN-T/CTC NLL is divided by
    # Auxiliary CTC loss on the RNN-T encoder output (a linear head over the same word
    # pieces), added as w_ctc * L_ctc. Not part of JUST (0 in the paper configs); ESPnet's
    # transducer and icefall's recipes offer the same option because it speeds up the
    # encoder's alignment learning from scratch a lot: on the mini corpus an RNN-T-only
    # model still decoded every utterance as the language model's favourite sentence
    # after 1300 updates, while a CTC head on the same encoder fitted a batch in 150.
    w_ctc: float = 0.0
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
        if self.rnnt_norm not in RNNT_NORMS:
            raise ValueError(f"model.rnnt_norm must be one of {RNNT_NORMS}, got {self.rnnt_norm!r}")
        if self.contrastive_dim < 0:
            raise ValueError(f"model.contrastive_dim must be >= 0, got {self.contrastive_dim}")
        if self.mode == "just" and self.rnnt_on_masked and self.conformer.conv_norm == "batch":
            raise ValueError(
                "model.rnnt_on_masked: true needs model.conformer.conv_norm: layer (with batch norm the "
                "running statistics that decoding uses would come from masked input only)")
        if self.rnnt_backend not in BACKENDS:
            raise ValueError(f"model.rnnt_backend must be one of {BACKENDS}, got {self.rnnt_backend!r}")
        if self.vocab_size < 2:
            raise ValueError(f"model.vocab_size must be >= 2 (blank + tokens), got {self.vocab_size}")
        if self.d_model < 1 or self.num_contrastive_blocks < 0 or self.num_mlm_blocks < 0:
            raise ValueError("model.d_model must be >= 1 and block counts >= 0")
        if self.num_contrastive_blocks + self.num_mlm_blocks < 1:
            raise ValueError("model needs at least one conformer block")
        if self.mode != "supervised" and (self.num_contrastive_blocks < 1 or self.num_mlm_blocks < 1):
            raise ValueError(f"mode {self.mode!r} needs num_contrastive_blocks >= 1 and num_mlm_blocks >= 1")
        if self.w_ctc < 0:
            raise ValueError(f"model.w_ctc must be >= 0, got {self.w_ctc}")
        if self.num_distractors < 1 or self.kappa <= 0:
            raise ValueError("model.num_distractors must be >= 1 and model.kappa > 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "JUSTConfig":
        """Build from ``yaml["model"]``; unknown keys are errors."""
        return from_dict(cls, d, "model")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class JUSTModel(nn.Module):
    """See docs/interfaces.md "Model": ``forward(batch, step) -> dict``, ``encode``, ``predictor``, ``joint``."""

    blank_id = 0

    def __init__(self, cfg: JUSTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.frontend = Conv2dSubsampling(cfg.feat_dim, d, cfg.subsampling)
        self.contrastive_blocks = ConformerStack(d, cfg.num_contrastive_blocks, cfg.conformer)
        self.mlm_blocks = ConformerStack(d, cfg.num_mlm_blocks, cfg.conformer)
        self.unsupervised = cfg.mode in ("pretrain", "just")
        self.supervised = cfg.mode in ("supervised", "just")
        if self.unsupervised:
            q = cfg.quantizer
            self.masker = SpanMasker(d, cfg.masking)
            self.quantizer = GumbelVectorQuantizer(d, q)
            final = cfg.contrastive_dim or q.code_dim
            self.contrastive_proj = nn.Linear(d, final)  # context -> contrastive space
            self.target_proj = nn.Linear(q.code_dim, final)  # quantized target -> contrastive space
            self.mlm_head = nn.Linear(d, q.groups * q.entries)
        else:
            self.masker = self.quantizer = self.contrastive_proj = self.target_proj = self.mlm_head = None
        if self.supervised:
            self.predictor = Predictor(cfg.vocab_size, cfg.predictor)
            self.joint = Joint(d, self.predictor.output_dim, cfg.vocab_size, cfg.joint)
        else:
            self.predictor = self.joint = None
        pruned = self.supervised and cfg.rnnt_loss.type == "pruned"
        # the pruned loss's trivial joiner: encoder and prediction network projected to the vocabulary
        self.simple_am_proj = nn.Linear(d, cfg.vocab_size) if pruned else None
        self.simple_lm_proj = nn.Linear(cfg.predictor.hidden_dim, cfg.vocab_size) if pruned else None
        self.ctc_head = nn.Linear(d, cfg.vocab_size) if self.supervised and cfg.w_ctc > 0 else None

    # ---------------------------------------------------------------- encoder
    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval/decoding path, no masking: fbank [B, T, F] -> ([B, T', D], [B])."""
        x, lens = self.frontend(feats, feat_lens)
        valid = lengths_to_valid(lens, x.size(1))
        return self.mlm_blocks(self.contrastive_blocks(x, valid), valid), lens

    # ---------------------------------------------------------------- losses
    def _normaliser(self, enc_lens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
        """What the summed RNN-T/CTC NLL of the labelled rows is divided by (``rnnt_norm``)."""
        norm = self.cfg.rnnt_norm
        if norm == "frame":
            n = enc_lens.sum()
        elif norm == "token":
            n = token_lens.sum()
        else:
            n = torch.full((), enc_lens.numel(), device=enc_lens.device)  # a fill, not a host copy
        return n.clamp(min=1).to(torch.float32)

    def _rnnt(self, enc: torch.Tensor, enc_lens: torch.Tensor, batch: Mapping, rows,
              step: int = 0) -> tuple[torch.Tensor, dict]:
        """The RNN-T term (normalised, see rnnt_norm) and what to log of it."""
        tokens, token_lens = batch["tokens"][rows], batch["token_lens"][rows]
        enc, enc_lens = enc[rows], enc_lens[rows]
        lc = self.cfg.rnnt_loss
        if lc.type == "full" and lc.chunk_utts <= 0 and self.cfg.rnnt_backend == "torchaudio":
            # torchaudio wants T == max(logit_lens) and U == max(target_lens) (and reads both
            # on the host itself); the other losses take padded sizes as they are
            enc = enc[:, : int(enc_lens.max())]
            tokens = tokens[:, : int(token_lens.max())]
        pred_in = torch.cat([self.predictor.initial_tokens(tokens.size(0), tokens.device), tokens], dim=1)
        pred, _ = self.predictor(pred_in)
        norm = self._normaliser(enc_lens, token_lens)
        # The joint and the loss run in fp32 even under autocast: bf16 logits would lose
        # the small probability differences the RNN-T lattice sums over.
        with torch.autocast(enc.device.type, enabled=False):
            if lc.type == "pruned":
                return self._rnnt_pruned(enc.float(), enc_lens, pred.float(), tokens, token_lens, norm, step)
            if lc.chunk_utts > 0:
                nll = chunked_rnnt_costs(enc.float(), pred.float(), self.joint, tokens, enc_lens, token_lens,
                                         lc.chunk_utts, self.blank_id).sum()
            else:
                logits = self.joint(enc.float()[:, :, None, :], pred.float()[:, None, :, :])  # [B, T', U+1, V]
                nll = rnnt_loss(logits, tokens, enc_lens, token_lens, blank=self.blank_id,
                                reduction="sum", backend=self.cfg.rnnt_backend)
        loss = nll / norm
        return loss, {"rnnt": loss.detach()}

    def _rnnt_pruned(self, enc, enc_lens, pred, tokens, token_lens, norm, step: int) -> tuple[torch.Tensor, dict]:
        """k2's pruned RNN-T (justkit.losses.rnnt_pruned): simple loss, bounds, pruned joint."""
        lc = self.cfg.rnnt_loss
        simple, pruned = pruned_rnnt_nll(enc, pred, self.joint, self.simple_am_proj, self.simple_lm_proj, tokens,
                                         enc_lens, token_lens, lc.s_range, self.blank_id)
        simple = simple.sum() / norm
        # a pruned lattice that cannot reach the end (s_range too small for an utterance) costs 0
        pruned = torch.where(torch.isfinite(pruned), pruned, torch.zeros_like(pruned)).sum() / norm
        s_scale, p_scale = lc.scales(step)
        loss = s_scale * simple + p_scale * pruned
        return loss, {"rnnt": pruned.detach(), "rnnt_simple": simple.detach()}

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

    def _ctc(self, enc: torch.Tensor, enc_lens: torch.Tensor, batch: Mapping, rows: torch.Tensor) -> torch.Tensor:
        """Auxiliary CTC (blank 0) on the labelled rows, normalised as the RNN-T loss
        (``rnnt_norm``); utterances too short for their labels count 0."""
        tokens, token_lens = batch["tokens"][rows], batch["token_lens"][rows]
        enc, enc_lens = enc[rows], enc_lens[rows]
        logp = self.ctc_head(enc).float().log_softmax(-1).transpose(0, 1)  # [T, B, V]
        loss = F.ctc_loss(logp, tokens, enc_lens, token_lens, blank=self.blank_id,
                          reduction="sum", zero_infinity=True)
        return loss / self._normaliser(enc_lens, token_lens)

    def _rnnt_unused(self) -> torch.Tensor:
        # A batch without labelled rows: a zero that still touches every parameter the
        # unsupervised terms do not (all of them in supervised mode), so DDP sees
        # gradients (zeros) for all parameters.
        params = self.parameters() if not self.unsupervised else (
            list(self.predictor.parameters()) + list(self.joint.parameters())
            + [p for m in (self.ctc_head, self.simple_am_proj, self.simple_lm_proj) if m is not None
               for p in m.parameters()])
        return sum(p.sum() for p in params) * 0.0

    def forward(self, batch: Mapping[str, Any], step: int = 0) -> dict[str, Any]:
        """Training losses for one batch; see JUSTConfig for the loss, its normalisation and the modes.

        Returns 0-dim detached tensors per term (docs/interfaces.md) and ``weighted``: the
        terms as they enter ``loss`` (weights applied, graphs kept; they sum to ``loss``),
        which the trainer differentiates one by one to log each term's share of the encoder
        gradient.
        """
        cfg = self.cfg
        feats, feat_lens = batch["feats"], batch["feat_lens"]
        if feats.size(0) != feat_lens.numel():
            raise ValueError(f"batch: feats has {feats.size(0)} rows but feat_lens {feat_lens.numel()}")
        dev = feats.device
        zero = torch.zeros((), device=dev)
        out: dict[str, Any] = {k: zero for k in (
            "rnnt", "ctc", "contrastive", "diversity", "mlm", "codebook_perplexity",
            "gumbel_temperature", "contrastive_acc", "mlm_acc")}
        weighted: dict[str, torch.Tensor] = {}
        enc_masked = front = None
        num_frames = None
        if self.unsupervised:
            x, lens = self.frontend(feats, feat_lens)
            valid = lengths_to_valid(lens, x.size(1))
            qo = self.quantizer(x, valid, step)  # reads the unmasked encoder output
            xm, mask = self.masker(x, lens)
            mask = mask & valid
            # The masked pass leaves the batch-norm running statistics to the unmasked pass
            # that the RNN-T reads (decoding sees unmasked input). Pre-training has no other pass.
            frozen = self.supervised and not cfg.rnnt_on_masked
            with frozen_running_stats(self) if frozen else contextlib.nullcontext():
                c = self.contrastive_blocks(xm, valid)
                m = self.mlm_blocks(c, valid)
            l_c, c_info = contrastive_loss(
                self.contrastive_proj(c), self.target_proj(qo.quantized), mask, cfg.num_distractors, cfg.kappa,
                codes=qo.ids)
            q = cfg.quantizer
            logits = self.mlm_head(m).view(m.size(0), m.size(1), q.groups, q.entries)
            l_m, m_info = mlm_loss(logits, qo.ids, mask)
            weighted.update(contrastive=cfg.w_u * l_c, diversity=cfg.w_u * cfg.w_div * qo.diversity_loss,
                            mlm=cfg.w_u * cfg.w_mlm * l_m)
            out.update(
                contrastive=l_c.detach(), diversity=qo.diversity_loss.detach(), mlm=l_m.detach(),
                codebook_perplexity=qo.code_perplexity.detach(),
                gumbel_temperature=torch.full((), qo.temperature, device=dev),
                contrastive_acc=torch.as_tensor(c_info["accuracy"], device=dev),
                mlm_acc=torch.as_tensor(m_info["accuracy"], device=dev),
            )
            enc_masked, front, num_frames = (m, lens), (x, lens, valid), lens.sum()
        if self.supervised:
            rows, any_labelled = self._labelled_rows(batch, feats.size(0), dev)
            if any_labelled:
                missing = [k for k in ("tokens", "token_lens") if k not in batch]
                if missing:
                    raise KeyError(f"batch has labelled rows but no {missing}")
                sup = batch.get("feats_sup")
                if cfg.rnnt_on_masked and enc_masked is not None:
                    enc, enc_lens = enc_masked
                elif sup is None and front is not None:
                    # second pass on the unmasked frontend output (the frontend is shared)
                    x, enc_lens, valid = front
                    enc = self.mlm_blocks(self.contrastive_blocks(x, valid), valid)
                else:
                    enc, enc_lens = self.encode(feats if sup is None else sup, feat_lens)
                    if num_frames is None:
                        num_frames = enc_lens.sum()
                l_rnnt, logged = self._rnnt(enc, enc_lens, batch, rows, step)
                weighted["rnnt"] = l_rnnt
                out.update(logged)
                if self.ctc_head is not None:
                    l_ctc = self._ctc(enc, enc_lens, batch, rows)
                    weighted["ctc"] = cfg.w_ctc * l_ctc
                    out["ctc"] = l_ctc.detach()
            else:
                weighted["rnnt"] = self._rnnt_unused()
                if num_frames is None:
                    num_frames = self.frontend.output_lengths(feat_lens).sum()
        out["loss"] = sum(weighted.values())
        out["num_frames"] = num_frames.detach()
        out["weighted"] = weighted
        return out

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The shared encoder every term trains: feature encoder + contrastive + MLM blocks."""
        return [p for m in (self.frontend, self.contrastive_blocks, self.mlm_blocks) for p in m.parameters()]

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
        loaded, bad = [], []
        with torch.no_grad():
            for k, v in state_dict.items():
                k = k[len("module."):] if k.startswith("module.") else k
                if k.startswith(RNNT_PREFIXES) or k not in own:
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
        """Parameter counts per part and in total."""
        parts = {
            "frontend": self.frontend, "contrastive_blocks": self.contrastive_blocks,
            "mlm_blocks": self.mlm_blocks, "masker": self.masker, "quantizer": self.quantizer,
            "contrastive_proj": self.contrastive_proj, "target_proj": self.target_proj, "mlm_head": self.mlm_head,
            "predictor": self.predictor, "joint": self.joint, "ctc_head": self.ctc_head,
            "simple_am_proj": self.simple_am_proj, "simple_lm_proj": self.simple_lm_proj,
        }
        counts = {k: count_parameters(m) for k, m in parts.items() if m is not None}
        counts["total"] = count_parameters(self)
        return counts
