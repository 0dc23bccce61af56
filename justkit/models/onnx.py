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
or more). Metadata (``model_type``, ``vocab_size``, ``blank_id``, feature options, ...) are in
every file's ``metadata_props``.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from justkit.models.package import locate

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
    import onnx

    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = str(k), str(v)
    onnx.save(m, str(path))


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Export the model of ``model_dir`` (packed or experiment dir) to ``out_dir`` (see the module doc)."""
    from justkit.data.dataset import resolve_cmvn
    from justkit.models.factory import load_checkpoint, model_from_config
    from justkit.text.tokenizer import Tokenizer

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
            "num_lstm_layers": L, "lstm_hidden": H, "feat_dim": feat_dim, "subsampling": 4,
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
    from justkit.fileio import atomic_write_text

    atomic_write_text(out / "tokens.txt", "".join(f"{tok.id_to_piece(i)} {i}\n" for i in range(tok.vocab_size)))
    log.info("exported %s -> %s (encoder, decoder, joiner, tokens.txt)", model_dir, out)
    return out


class OnnxTransducer:
    """Greedy search over the three ONNX files with ONNX Runtime (no PyTorch model involved)."""

    def __init__(self, onnx_dir: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        d = Path(onnx_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(d / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(d / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
        self.joiner = ort.InferenceSession(str(d / "joiner.onnx"), opts, providers=["CPUExecutionProvider"])
        meta = self.encoder.get_modelmeta().custom_metadata_map
        self.blank = int(meta["blank_id"])
        self.layers, self.hidden = int(meta["num_lstm_layers"]), int(meta["lstm_hidden"])
        self.tokens = [line.rsplit(" ", 1)[0] for line in (d / "tokens.txt").read_text(encoding="utf-8").splitlines()]

    def _step(self, y: int, h: np.ndarray, c: np.ndarray):
        return self.decoder.run(None, {"y": np.array([[y]], dtype=np.int64), "h": h, "c": c})

    def greedy_search(self, feats: Sequence[np.ndarray], max_symbols_per_frame: int = 3) -> List[List[int]]:
        """Token ids of each ``[T, D]`` raw fbank matrix, as ``justkit.decode.greedy_search`` finds them."""
        out = []
        for f in feats:
            x = np.asarray(f, dtype=np.float32)[None]
            enc, lens = self.encoder.run(None, {"x": x, "x_lens": np.array([x.shape[1]], dtype=np.int64)})
            h = np.zeros((self.layers, 1, self.hidden), np.float32)
            c = np.zeros_like(h)
            dec, h, c = self._step(self.blank, h, c)
            hyp: List[int] = []
            for t in range(int(lens[0])):
                for _ in range(max_symbols_per_frame):
                    logit = self.joiner.run(None, {"encoder_out": enc[:, t], "decoder_out": dec})[0][0]
                    k = int(np.argmax(logit))
                    if k == self.blank:
                        break
                    hyp.append(k)
                    dec, h, c = self._step(k, h, c)
            out.append(hyp)
        return out
