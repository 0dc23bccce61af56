"""Model FLOPs counted from the architecture (matrix products and convolutions; element-wise work
left out), for throughput and MFU figures.

torch's FlopCounterMode over-counts the backward of a depthwise Conv1d (by the group count,
512x in the torch this project pins), which made the paper config's MFU come out ~1.4x too
high, and counts nothing for the CPU attention kernel; the counts here are the textbook ones:
2 m n k per [m, k] x [k, n] product, the backward twice the forward. Paper-size JUST
(w2v-BERT XL, 15 s utterances): about 180 GFLOP per second of audio.
"""
from __future__ import annotations

from justkit.losses.terms import UNSUPERVISED, LossConfig
from justkit.models.just import JUSTConfig
from justkit.frontend.lengths import conv_out_len


def conformer_block_flops(frames: int, d: int, ffn: int, kernel: int) -> float:
    """Forward FLOPs of one conformer block over one utterance of ``frames`` encoder frames
    (global attention: the full [T, T] scores, as the attention kernels compute them)."""
    t = frames
    ffn_ = 2 * (2 * t * d * ffn * 2)         # two half-step FFNs, each d -> ffn -> d
    attn = 2 * t * d * 3 * d + 2 * t * d * d  # qkv and output projections
    attn += 2 * (2 * t * t * d)               # scores Q K^T and the weighted sum A V
    conv = 2 * t * d * 2 * d + 2 * t * d * kernel + 2 * t * d * d  # pointwise (GLU), depthwise, pointwise
    return float(ffn_ + attn + conv)


def subsampling_flops(input_frames: int, feat_dim: int, channels: int, kernel: int, d: int) -> float:
    t1, f1 = conv_out_len(input_frames, kernel), conv_out_len(feat_dim, kernel)
    t2, f2 = conv_out_len(t1, kernel), conv_out_len(f1, kernel)
    return float(2 * t1 * f1 * channels * kernel * kernel + 2 * t2 * f2 * channels * channels * kernel * kernel
                 + 2 * t2 * channels * f2 * d)


def training_flops(cfg: JUSTConfig, input_frames: int, tokens: int, labelled: bool = True,
                   loss: LossConfig | None = None) -> float:
    """FLOPs of one training step's forward and backward (3x forward) for one utterance of
    ``input_frames`` 10 ms frames and ``tokens`` labels, in the model's mode, with the loss terms
    ``loss`` turns on (each term's own count, justkit.losses.terms): JUST runs the conformer blocks
    twice (masked and unmasked passes) for a labelled utterance."""
    loss = loss if loss is not None else LossConfig()
    d = cfg.d_model
    c = cfg.conformer
    k = cfg.subsampling.kernel
    t = conv_out_len(conv_out_len(input_frames, k), k)
    blocks = cfg.num_contrastive_blocks + cfg.num_mlm_blocks
    block = conformer_block_flops(t, d, c.ffn_dim, c.conv_kernel)
    fwd = subsampling_flops(input_frames, cfg.feat_dim, cfg.subsampling.channels, k, d)
    passes = 0
    if UNSUPERVISED in cfg.kinds:
        q = cfg.quantizer
        passes += 1
        q_in = cfg.subsampling.channels * conv_out_len(conv_out_len(cfg.feat_dim, k), k) if q.input == "features" else d
        fwd += 2 * t * q_in * q.groups * q.entries  # quantizer logits
    if cfg.mode == "supervised" or (cfg.mode == "just" and not cfg.rnnt_on_masked and labelled):
        passes += 1  # the unmasked pass (JUST runs it over the labelled rows only)
    for term in loss.active(cfg.kinds):
        if term.flops is not None and (term.kind == UNSUPERVISED or labelled):
            fwd += term.flops(cfg, loss, t, tokens)
    fwd += passes * blocks * block
    return 3.0 * fwd
