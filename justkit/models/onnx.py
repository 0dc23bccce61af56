"""ONNX export of a transducer (encoder, one prediction-network step, joiner) and a greedy decoder over ONNX Runtime.

Layout (as sherpa-onnx and icefall's ``export-onnx.py`` split a transducer), in ``<model_dir>/onnx/``:

- ``encoder.onnx``: ``x`` [N, T, 80] raw Kaldi fbank (the model's front end, ``fbank.yaml``),
  ``x_lens`` [N] int64 -> ``encoder_out`` [N, T', J], ``encoder_out_lens`` [N]. The global CMVN
  and the joiner's encoder projection are inside.
- ``decoder.onnx``: ``y`` [N, 1] int64 (the previous token; blank 0 at the start), ``h``, ``c``
  [L, N, H] LSTM state -> ``decoder_out`` [N, J] (joiner projection inside), ``next_h``, ``next_c``.
- ``joiner.onnx``: ``encoder_out`` [N, J], ``decoder_out`` [N, J] -> ``logit`` [N, V].
- ``tokens.txt``: ``<piece> <id>`` per line (blank ``<blk>`` = 0).

Where it differs from sherpa-onnx's transducers: the prediction network is a 2-layer LSTM with
state (sherpa-onnx's offline transducers expect a stateless decoder of fixed context, so
``decoder.onnx`` does not load there as is), and the features are justkit's Kaldi fbank with
``snip_edges`` true (sherpa-onnx computes its own with snip_edges false: a frame or two fewer
or more). Metadata (``model_type``, ``vocab_size``, ``blank_id``, ``subsampling``, ``min_frames``,
feature options, ...) are in every file's ``metadata_props``.

``OnnxTransducer.from_dir(model_dir)(waveform, sample_rate) -> text`` is the same front door as
``Speech2Text`` (``justkit.decode.transcribe.Transcriber``: resampling, the model dir's fbank, long
audio in pieces, the model dir's tokenizer), with the batched greedy search run by ONNX Runtime.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from justkit.data.dataset import resolve_cmvn
from justkit.decode.decoder import check_finite
from justkit.decode.hyp import Hypothesis
from justkit.decode.transcribe import MAX_SEGMENT_S, Transcriber
from justkit.fileio import atomic_write_text
from justkit.frontend.fbank import FbankConfig
from justkit.models.factory import load_checkpoint, model_from_config
from justkit.models.modeldir import ModelDirError, check_frontend, locate
from justkit.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)
OPSET = 17


class _Encoder(nn.Module):
    def __init__(self, model, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        enc, lens = self.model.encode((x - self.mean) / self.std, x_lens)
        return self.model.joint.enc_proj(enc), lens


class _Decoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h2, c2) = self.model.predictor(y, (h, c))
        return self.model.joint.pred_proj(out[:, 0]), h2, c2


class _Joiner(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.joint = model.joint

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor):
        return self.joint.combine(encoder_out, decoder_out)


def _add_metadata(path: Path, meta: dict) -> None:
    import onnx  # lazy: an optional extra (pip install justkit[onnx]), needed only to export

    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = str(k), str(v)
    onnx.save(m, str(path))


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the model of ``model_dir`` (packed or experiment dir) to ``out_dir`` (see the module doc)."""
    files = locate(model_dir)
    model = model_from_config(files.config, str(files.weights))
    model.load_state_dict(load_checkpoint(files.weights)["model"])
    model.eval()
    cfg = model.cfg
    feat_dim = cfg.feat_dim
    if files.cmvn is not None:
        mean, std = (torch.from_numpy(a) for a in resolve_cmvn(files.cmvn))
    else:
        mean, std = torch.zeros(feat_dim), torch.ones(feat_dim)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L, H = cfg.predictor.num_layers, cfg.predictor.hidden_dim
    J, V = cfg.joint.joint_dim, cfg.vocab_size
    meta = {"model_type": "justkit_transducer_lstm", "vocab_size": V, "blank_id": 0, "joiner_dim": J,
            "num_lstm_layers": L, "lstm_hidden": H, "feat_dim": feat_dim,
            "subsampling": int(getattr(model.frontend, "stride", 4)),
            "min_frames": int(getattr(model.frontend, "min_frames", 1)),
            **{f"fbank_{k}": v for k, v in files.fbank.items()}}
    x = torch.randn(2, 100, feat_dim)
    x_lens = torch.tensor([100, 80])
    jobs = [
        ("encoder.onnx", _Encoder(model, mean.float(), std.float()), (x, x_lens), ["x", "x_lens"],
         ["encoder_out", "encoder_out_lens"],
         {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"}, "encoder_out_lens": {0: "N"}}),
        ("decoder.onnx", _Decoder(model), (torch.zeros(2, 1, dtype=torch.long), torch.zeros(L, 2, H), torch.zeros(L, 2, H)),
         ["y", "h", "c"], ["decoder_out", "next_h", "next_c"],
         {"y": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "decoder_out": {0: "N"}, "next_h": {1: "N"}, "next_c": {1: "N"}}),
        ("joiner.onnx", _Joiner(model), (torch.randn(2, J), torch.randn(2, J)), ["encoder_out", "decoder_out"],
         ["logit"], {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}),
    ]
    for name, module, args, inputs, outputs, axes in jobs:
        module.eval()
        tmp = out / f".{name}.tmp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET)
        _add_metadata(tmp, meta)
        tmp.replace(out / name)
    tok = Tokenizer(files.tokenizer)
    atomic_write_text(out / "tokens.txt", "".join(f"{tok.id_to_piece(i)} {i}\n" for i in range(tok.vocab_size)))
    log.info("exported %s -> %s (encoder, decoder, joiner, tokens.txt)", model_dir, out)
    return out


class OnnxTransducer(Transcriber):
    """The exported model under ONNX Runtime (no PyTorch model involved).

    ``OnnxTransducer.from_dir(model_dir)(waveform, sample_rate) -> text``: the front door of
    ``Speech2Text`` (same resampling, fbank, long-audio pieces and detokenising, from the same
    code), greedy search only. ``OnnxTransducer(model_dir / "onnx").greedy_search([raw_fbank])``:
    token ids of features computed elsewhere (raw Kaldi fbank: the CMVN is inside ``encoder.onnx``).
    """

    cmvn_in_search = True   # encoder.onnx normalises: features() gives it raw fbank

    def __init__(self, onnx_dir: str | Path, threads: int = 1, tokenizer: Optional[Tokenizer] = None,
                 fbank: Optional[FbankConfig] = None, cmvn: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                 max_segment_s: float = MAX_SEGMENT_S, batch_size: int = 8,
                 max_symbols_per_frame: int = 3, timing: str = "auto") -> None:
        import onnxruntime as ort  # lazy: an optional extra, needed only to run the exported files

        d = Path(onnx_dir)
        missing = [f for f in ("encoder.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt") if not (d / f).is_file()]
        if missing:
            raise ModelDirError(f"{d}: lacks {missing} (export with python -m justkit.bin.pack_model --onnx)")
        if max_symbols_per_frame < 1:
            raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        if timing not in ("auto", "off"):
            raise ValueError(f"timing {timing!r}: the ONNX export cannot align; 'auto' times pieces by the "
                             "frames the search emitted them on, 'off' gives none")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads   # 0: ONNX Runtime's default (one per core)
        opts.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(d / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(d / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.joiner = ort.InferenceSession(str(d / "joiner.onnx"), opts, providers=["CPUExecutionProvider"])
        self.meta = self.encoder.get_modelmeta().custom_metadata_map
        self.blank = int(self.meta["blank_id"])
        self.layers, self.hidden = int(self.meta["num_lstm_layers"]), int(self.meta["lstm_hidden"])
        self.tokens = [line.rsplit(" ", 1)[0] for line in (d / "tokens.txt").read_text(encoding="utf-8").splitlines()]
        self.max_symbols_per_frame = int(max_symbols_per_frame)
        # exports before min_frames was recorded: two 3x3 stride-2 convolutions need 7 frames
        super().__init__(tokenizer, fbank, cmvn, int(self.meta.get("subsampling", 4)),
                         int(self.meta.get("min_frames", 7)), max_segment_s, batch_size, timing)

    @classmethod
    def from_dir(cls, model_dir: str | Path, threads: int = 1, max_segment_s: float = MAX_SEGMENT_S,
                 batch_size: int = 8, max_symbols_per_frame: int = 3, timing: str = "auto") -> "OnnxTransducer":
        """The ONNX export in ``model_dir/onnx`` (a packed model dir, ``pack_model --onnx``) with the
        dir's front end (``fbank.yaml``, ``cmvn.ark``) and tokenizer (``spm.model``), checked
        against the export (vocabulary, feature dim, the front end recorded at export)."""
        files = locate(model_dir)
        onnx_dir = Path(model_dir) / "onnx"
        if not onnx_dir.is_dir():
            raise ModelDirError(f"{model_dir}: no onnx/ export in it (pack it with python -m justkit.bin.pack_model --onnx)")
        tok = Tokenizer(files.tokenizer)
        fbank = FbankConfig.from_dict(files.fbank)
        cmvn = resolve_cmvn(files.cmvn) if files.cmvn else None
        self = cls(onnx_dir, threads, tok, fbank, cmvn, max_segment_s, batch_size, max_symbols_per_frame, timing)
        pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
        if pieces != self.tokens:
            raise ModelDirError(f"{onnx_dir / 'tokens.txt'}: {len(self.tokens)} pieces that are not those of "
                                f"{files.tokenizer} ({tok.vocab_size}): the export is of another model (re-pack with --onnx)")
        recorded = {k[len("fbank_"):]: v for k, v in self.meta.items() if k.startswith("fbank_")}
        check_frontend(files, fbank, int(self.meta["feat_dim"]), cmvn, recorded)
        return self

    def _step(self, y: np.ndarray, h: np.ndarray, c: np.ndarray):
        return self.decoder.run(None, {"y": y.reshape(-1, 1).astype(np.int64), "h": h, "c": c})

    def _greedy(self, enc: np.ndarray, lens: np.ndarray, max_symbols: int) -> List[Hypothesis]:
        """Batched greedy search over encoder outputs ``[N, T, J]``: what ``justkit.decode.greedy``
        does with the PyTorch model (the same ties, the same ``score``, the frame of each token)."""
        N = enc.shape[0]
        h = np.zeros((self.layers, N, self.hidden), np.float32)
        c = np.zeros_like(h)
        dec, h, c = self._step(np.full(N, self.blank), h, c)
        scores = np.zeros(N, np.float64)
        tokens: List[List[int]] = [[] for _ in range(N)]
        frames: List[List[int]] = [[] for _ in range(N)]
        probs: List[List[float]] = [[] for _ in range(N)]
        for t in range(int(lens.max()) if N else 0):
            active = lens > t
            for _ in range(max_symbols):
                logit = self.joiner.run(None, {"encoder_out": np.ascontiguousarray(enc[:, t]), "decoder_out": dec})[0]
                m = logit.max(-1, keepdims=True)
                logp = logit - (m + np.log(np.exp(logit - m).sum(-1, keepdims=True)))  # log_softmax
                best = logp.argmax(-1)
                scores += np.where(active, logp[np.arange(N), best].astype(np.float64), 0.0)
                emit = active & (best != self.blank)
                if not emit.any():
                    break
                for b in np.flatnonzero(emit):
                    tokens[b].append(int(best[b]))
                    frames[b].append(t)
                    probs[b].append(float(np.exp(logp[b, best[b]])))
                new_dec, new_h, new_c = self._step(best, h, c)
                dec = np.where(emit[:, None], new_dec, dec)
                h = np.where(emit[None, :, None], new_h, h)
                c = np.where(emit[None, :, None], new_c, c)
                active = emit
        return [Hypothesis(tokens[b], float(scores[b]), frames=frames[b], probs=probs[b]) for b in range(N)]

    def _encode(self, feats: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Pad the raw fbank matrices and run encoder.onnx: ``[N, T', J]`` and the lengths."""
        lens = np.array([f.shape[0] for f in feats], dtype=np.int64)
        x = np.zeros((len(feats), int(lens.max()), feats[0].shape[1]), np.float32)
        for j, f in enumerate(feats):
            x[j, : f.shape[0]] = f
        enc, enc_lens = self.encoder.run(None, {"x": x, "x_lens": lens})
        return enc, np.asarray(enc_lens)

    def search(self, feats: Sequence[np.ndarray], names: Sequence[str] = ()) -> List[Hypothesis]:
        """encoder.onnx on the padded batch, then the batched greedy search."""
        enc, enc_lens = self._encode(feats)
        check_finite(torch.from_numpy(enc), list(names) or [f"#{i}" for i in range(len(feats))], "onnx")
        return self._greedy(enc, enc_lens, self.max_symbols_per_frame)

    def greedy_search(self, feats: Sequence[np.ndarray], max_symbols_per_frame: Optional[int] = None) -> List[List[int]]:
        """Token ids of each ``[T, D]`` raw fbank matrix, as ``justkit.decode.greedy_search`` finds them
        (``batch_size`` matrices through the encoder at once; long ones are not cut)."""
        S = self.max_symbols_per_frame if max_symbols_per_frame is None else int(max_symbols_per_frame)
        out: List[List[int]] = []
        for b in range(0, len(feats), self.batch_size):
            group = [np.asarray(f, dtype=np.float32) for f in feats[b : b + self.batch_size]]
            out += [h.tokens for h in self._greedy(*self._encode(group), S)]
        return out
