"""Using a trained model: the packed model directory, Speech2Text, the transcribe CLI, ONNX export.

The recipe test (test_recipe_e2e.py) checks the same on a model the recipe trained; these build a
small experiment directory by hand, so that each piece is checked on its own and fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from justkit.datadir.tables import read_table
from justkit.fileio import atomic_torch_save
from justkit.frontend.fbank import FbankConfig


def test_pack_model_round_trip(experiment, tmp_path):
    from justkit.bin.pack_model import main
    from justkit.models.factory import load_model
    from justkit.models.package import locate

    out = tmp_path / "packed"
    assert main([str(experiment["exp"]), str(out)]) == 0
    for f in ("model.pt", "config.yaml", "spm.model", "cmvn.ark", "fbank.yaml", "README.md"):
        assert (out / f).is_file(), f
    model, cfg = load_model(out / "model.pt")
    ref = experiment["model"].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    files = locate(out)
    assert files.fbank == FbankConfig().__dict__ and files.cmvn == out / "cmvn.ark"
    assert (out / "spm.model").read_bytes() == (experiment["dir"] / "token/spm.model").read_bytes()
    # incomplete directories and pre-training models are refused with one clear line
    (out / "spm.model").unlink()
    assert main([str(experiment["exp"]), str(tmp_path / "x")]) == 0  # packing reads the experiment
    from justkit.models.package import ModelDirError

    with pytest.raises(ModelDirError, match="lacks"):
        locate(out)


def test_speech2text_equals_decoding_the_packed_features(experiment, tmp_path):
    """Transcribing the FLAC files gives exactly what stage 7's greedy search gives on stage 3's
    features of the same audio (same front end, CMVN and search)."""
    from justkit.data.dataset import resolve_cmvn
    from justkit.decode.greedy import GreedyConfig, greedy_search
    from justkit.decode.transcribe import Speech2Text
    from justkit.text.tokenizer import Tokenizer

    s2t = Speech2Text.from_dir(experiment["exp"])
    mean, std = resolve_cmvn(experiment["dir"] / "fbank/cmvn.ark")
    tok = Tokenizer(experiment["dir"] / "token/spm.model")
    model = experiment["model"]
    texts = []
    for u, path in experiment["audio"].items():
        x, sr = sf.read(path, dtype="float32")
        f = torch.from_numpy((experiment["feats"][u] - mean) / std)[None]
        with torch.no_grad():
            enc, lens = model.encode(f, torch.tensor([f.shape[1]]))
        want = tok.decode(greedy_search(model, enc, lens, GreedyConfig())[0].tokens)
        got = s2t.transcribe([(x, sr)])[0]
        assert got.text == want == s2t(x, sr)
        assert len(got.times) == len(got.pieces) and got.times == sorted(got.times)
        texts.append(want)
    assert any(texts), "the model emitted nothing: the comparison would be empty"
    # other sample rates are resampled as stage 2 does; batched equals one by one
    x, sr = sf.read(experiment["audio"]["en1"], dtype="float32")
    from justkit.frontend.resample import resample

    x48 = resample(x, 16000, 48000)
    assert s2t.features(x48, 48000).shape == s2t.features(x, 16000).shape
    batch = [sf.read(p, dtype="float32") for p in experiment["audio"].values()]
    assert [r.text for r in s2t.transcribe(batch)] == texts


def test_transcribe_cli_files_dirs_wav_scp_and_bad_audio(experiment, tmp_path, capfd):
    from justkit.bin.transcribe import main

    exp = experiment["exp"]
    out = tmp_path / "hyp.txt"
    audio_dir = experiment["dir"] / "audio"
    assert main(["--model_dir", str(exp), str(audio_dir), "--out", str(out)]) == 0
    hyp = read_table(out, allow_empty_value=True)
    assert sorted(hyp) == sorted(experiment["audio"])
    assert main(["--model_dir", str(exp), str(experiment["audio"]["pl1"]), "--method", "beam", "--beam_size", "2",
                 "--out", str(tmp_path / "beam.txt")]) == 0
    assert list(read_table(tmp_path / "beam.txt", allow_empty_value=True)) == ["pl1"]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"utt_{u} {p}\n" for u, p in experiment["audio"].items()))
    assert main(["--model_dir", str(exp), "--wav_scp", str(scp), "--out", str(tmp_path / "h2.txt")]) == 0
    assert sorted(read_table(tmp_path / "h2.txt", allow_empty_value=True)) == sorted(f"utt_{u}" for u in hyp)
    # unreadable audio: named, the others still transcribed, exit status 2
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio at all")
    capfd.readouterr()
    rc = main(["--model_dir", str(exp), str(bad), str(experiment["audio"]["pl1"]), "--out", str(tmp_path / "h3.txt")])
    err = capfd.readouterr().err
    assert rc == 2 and "broken.wav" in err and "unreadable" in err
    assert list(read_table(tmp_path / "h3.txt", allow_empty_value=True)) == ["pl1"]
    assert main(["--model_dir", str(exp), str(tmp_path / "missing.wav")]) == 2


def test_onnx_greedy_equals_pytorch_greedy(experiment, tmp_path):
    from justkit.decode.transcribe import Speech2Text
    from justkit.models.onnx import OnnxTransducer, export_onnx

    export_onnx(experiment["exp"], tmp_path / "onnx")
    ort_model = OnnxTransducer(tmp_path / "onnx")
    s2t = Speech2Text.from_dir(experiment["exp"])
    raw = list(experiment["feats"].values())  # raw fbank: the CMVN is inside encoder.onnx
    want = [r.text for r in s2t.transcribe([sf.read(p, dtype="float32") for p in experiment["audio"].values()])]
    got = [s2t.tokenizer.decode(h) for h in ort_model.greedy_search(raw)]
    assert got == want
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "onnx/encoder.onnx")).metadata_props}
    assert meta["model_type"] == "justkit_transducer_lstm" and meta["blank_id"] == "0"
    assert (tmp_path / "onnx/tokens.txt").read_text().splitlines()[0] == "<blk> 0"


def _lm_dir(path: Path, vocab: int, seed: int = 0) -> Path:
    """exp/lm_<tag> as LM training leaves it: model_avg.pt whose config says task: lm."""
    from justkit.models.lm import LMConfig, TokenLM

    torch.manual_seed(seed)
    lm = TokenLM(LMConfig(vocab_size=vocab, embed_dim=16, hidden_dim=16, num_layers=1, dropout=0.0))
    with torch.no_grad():
        lm.out.weight.mul_(6.0)   # an opinionated LM, so that fusing it changes the search
    path.mkdir(parents=True)
    cfg = {"task": "lm", "model": vars(lm.cfg), "data": {}, "train": {"max_steps": 1},
           "paths": {"train": "dump/lm/train", "dev": "dump/lm/dev"}}
    atomic_torch_save({"model": lm.state_dict(), "config": cfg, "step": 1, "epoch": 0}, path / "model_avg.pt")
    return path


def test_lm_round_trips_through_pack_model_and_transcribe(experiment, tmp_path):
    """An LM packed with the model (lm/, fusion weights, model card) is what Speech2Text and the
    transcribe CLI fuse by default, and gives what fusing the LM's own directory gives."""
    from justkit.bin.pack_model import main as pack
    from justkit.bin.transcribe import main as transcribe
    from justkit.decode.transcribe import Speech2Text

    vocab = experiment["model"].cfg.vocab_size
    lm_dir = _lm_dir(tmp_path / "lm_x", vocab)
    out = tmp_path / "packed"
    assert pack([str(experiment["exp"]), str(out), "--lm_dir", str(lm_dir), "--lm_weight", "0.8",
                 "--ilm_weight", "0.1"]) == 0
    assert (out / "lm" / "model.pt").is_file()
    fusion = yaml.safe_load((out / "lm" / "fusion.yaml").read_text())["fusion"]
    assert fusion["lm_weight"] == 0.8 and fusion["ilm_weight"] == 0.1
    card = (out / "README.md").read_text()
    assert "## Language model" in card and "`lm_weight` 0.8" in card and str(lm_dir / "model_avg.pt") in card
    packed = Speech2Text.from_dir(out, method="beam", beam_size=3)
    direct = Speech2Text.from_dir(experiment["exp"], method="beam", beam_size=3, lm_dir=lm_dir,
                                  lm_weight=0.8, ilm_weight=0.1)
    plain = Speech2Text.from_dir(experiment["exp"], method="beam", beam_size=3)
    assert packed.fusion.lm_weight == 0.8 and packed.fusion.ilm_weight == 0.1
    batch = [sf.read(p, dtype="float32") for p in experiment["audio"].values()]
    got, want, base = (s.transcribe(batch) for s in (packed, direct, plain))
    assert [r.text for r in got] == [r.text for r in want]
    assert [r.score for r in got] == [r.score for r in want]
    assert [r.text for r in got] != [r.text for r in base], "the LM changed nothing: the test would be vacuous"
    hyp = tmp_path / "hyp.txt"
    audio = [str(p) for p in experiment["audio"].values()]
    assert transcribe(["--model_dir", str(out), "--method", "beam", "--beam_size", "3", "--out", str(hyp), *audio]) == 0
    assert list(read_table(hyp, allow_empty_value=True).values()) == [r.text for r in got]
    # repacking without an LM removes the stale one
    assert pack([str(experiment["exp"]), str(out)]) == 0
    assert not (out / "lm").exists() and "## Language model" not in (out / "README.md").read_text()


def test_bad_lm_inputs_are_one_line_errors(experiment, tmp_path, capfd):
    from justkit.bin.pack_model import main as pack
    from justkit.bin.transcribe import main as transcribe

    vocab = experiment["model"].cfg.vocab_size
    other = _lm_dir(tmp_path / "lm_other", vocab + 3)
    wav = str(experiment["audio"]["pl1"])
    capfd.readouterr()
    assert pack([str(experiment["exp"]), str(tmp_path / "p"), "--lm_dir", str(other)]) == 2
    assert f"{vocab + 3} pieces, the ASR model's {vocab}" in capfd.readouterr().err
    assert transcribe(["--model_dir", str(experiment["exp"]), "--method", "beam", "--lm_dir", str(other), wav]) == 2
    good = _lm_dir(tmp_path / "lm_good", vocab)
    for bad in ("-0.5", "nan", "inf"):
        assert transcribe(["--model_dir", str(experiment["exp"]), "--method", "beam", "--lm_dir", str(good),
                           "--lm_weight", bad, wav]) == 2
        err = capfd.readouterr().err
        assert "lm_weight must be a finite number >= 0" in err
    data = (good / "model_avg.pt").read_bytes()
    (good / "model_avg.pt").write_bytes(data[:-100])
    assert transcribe(["--model_dir", str(experiment["exp"]), "--method", "beam", "--lm_dir", str(good), wav]) == 2
    assert "unreadable checkpoint" in capfd.readouterr().err


# --------------------------------------------------------------------------- ONNX front door
@pytest.fixture(scope="module")
def packed_onnx(experiment, tmp_path_factory):
    """The fixture's experiment packed as stage 8 packs it: model dir with onnx/."""
    from justkit.models.package import pack_model

    return pack_model(experiment["exp"], tmp_path_factory.mktemp("packed_onnx") / "model", onnx=True)


def test_onnx_front_door_gives_speech2text_text(experiment, packed_onnx, speech_signal):
    """OnnxTransducer.from_dir(dir)(waveform, rate) is Speech2Text's greedy text on every test
    utterance of the fixture (5: 3 en, 2 pl), one by one and batched, with the same pieces and
    times; at 48 kHz (resampled as stage 2 does); and on long audio cut into the same pieces."""
    from justkit.decode.transcribe import Speech2Text
    from justkit.models.onnx import OnnxTransducer

    ort_s2t = OnnxTransducer.from_dir(packed_onnx)
    s2t = Speech2Text.from_dir(packed_onnx)
    batch = [sf.read(p, dtype="float32") for p in experiment["audio"].values()]
    assert len(batch) == 5
    want = s2t.transcribe(batch)
    got = ort_s2t.transcribe(batch)
    assert [r.text for r in got] == [r.text for r in want] == [ort_s2t(x, sr) for x, sr in batch]
    assert [r.pieces for r in got] == [r.pieces for r in want]
    # times: ONNX cannot align, so its pieces start where the greedy search emitted them (source
    # "search"), with the posterior the search chose them with; PyTorch aligns (docs/interfaces.md)
    from justkit.decode.greedy import greedy_search

    for (x, sr), r in zip(batch, got):
        if not r.text:
            continue
        assert r.timing == "search" and len(r.spans) == len(r.pieces) and r.words
        f = torch.from_numpy(s2t.features(x, sr))[None]
        enc, enc_lens = s2t.model.encode(f, torch.tensor([f.shape[1]]))
        h = greedy_search(s2t.model, enc, enc_lens, s2t.greedy)[0]
        assert r.times[0] == round(h.frames[0] * ort_s2t.frame_seconds, 3) and r.times == sorted(r.times)
        assert all(0 < sp.confidence <= 1 for sp in r.spans)
    with pytest.raises(ValueError, match="cannot align"):
        OnnxTransducer.from_dir(packed_onnx, timing="ctc")
    assert OnnxTransducer.from_dir(packed_onnx, timing="off").transcribe(batch[:1])[0].words == []
    assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-3)
    assert sum(bool(r.text) for r in want) >= 3, "the model emits little: the comparison would be weak"
    from justkit.frontend.resample import resample

    x, sr = batch[3]
    assert ort_s2t(resample(x, sr, 48000), 48000) == s2t(resample(x, sr, 48000), 48000)
    # long audio: the same cut points (on CMVN-normalised energy, though ONNX gets raw fbank) and text
    long_x = np.concatenate([speech_signal(k, 2.5) if k % 2 == 0 else np.zeros(8000, np.float32) for k in range(9)])
    ort_long = OnnxTransducer.from_dir(packed_onnx, max_segment_s=4.0, batch_size=2)
    s2t_long = Speech2Text.from_dir(packed_onnx, max_segment_s=4.0, batch_size=2)
    f_raw, f_norm = ort_long.features(long_x, 16000), s2t_long.features(long_x, 16000)
    assert not np.allclose(f_raw, f_norm), "ONNX must get raw fbank (the CMVN is inside encoder.onnx)"
    assert ort_long.segments(f_raw) == s2t_long.segments(f_norm) and len(s2t_long.segments(f_norm)) >= 4
    a, b = ort_long.transcribe([(long_x, 16000)])[0], s2t_long.transcribe([(long_x, 16000)])[0]
    assert a.text == b.text and [w.text for w in a.words] == [w.text for w in b.words]


def test_transcribe_cli_backend_onnx_writes_what_torch_writes(experiment, packed_onnx, tmp_path, capfd):
    """--backend onnx: the same hyp.txt and CTM as the PyTorch backend; what ONNX cannot do
    (beam search, an LM, a GPU) and a model dir without onnx/ are one-line errors, before decoding."""
    from justkit.bin.transcribe import main

    audio = [str(p) for p in experiment["audio"].values()]
    out = {}
    for backend in ("torch", "onnx"):
        hyp, ctm = tmp_path / f"{backend}.txt", tmp_path / f"{backend}.ctm"
        assert main(["--model_dir", str(packed_onnx), "--backend", backend, "--num_threads", "1",
                     "--out", str(hyp), "--ctm", str(ctm), *audio]) == 0
        out[backend] = (hyp.read_text(), ctm.read_text())
    assert "onnxruntime, cpu" in capfd.readouterr().err
    assert out["onnx"][0] == out["torch"][0] and len(out["torch"][0].splitlines()) == 5 and out["torch"][1]
    words = {b: [ln.split()[:1] + ln.split()[4:5] for ln in out[b][1].splitlines()] for b in out}
    assert words["onnx"] == words["torch"]  # the same words; their times come from different paths
    for opts, msg in ((["--method", "beam"], "--method beam needs --backend torch"),
                      (["--lm_dir", str(tmp_path)], "--lm_dir"), (["--lm_weight", "0.3"], "--lm_weight 0.3"),
                      (["--device", "cuda"], "--device cuda needs --backend torch")):
        assert main(["--model_dir", str(packed_onnx), "--backend", "onnx", *opts, audio[0],
                     "--out", str(tmp_path / "x.txt")]) == 2
        err = capfd.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.txt").exists()
    assert main(["--model_dir", str(experiment["exp"]), "--backend", "onnx", audio[0]]) == 2
    assert "no onnx/ export in it" in capfd.readouterr().err


def test_onnx_export_of_another_model_is_refused(packed_onnx, tmp_path):
    """An onnx/ whose tokens are not the dir's tokenizer's, or whose export recorded another front
    end, is refused naming the file (its text would be another model's pieces)."""
    import shutil

    from justkit.models.modeldir import ModelDirError
    from justkit.models.onnx import OnnxTransducer

    d = tmp_path / "model"
    shutil.copytree(packed_onnx, d)
    tokens = (d / "onnx/tokens.txt").read_text().splitlines()
    (d / "onnx/tokens.txt").write_text("\n".join(tokens[:-1]) + "\n")
    with pytest.raises(ModelDirError, match="onnx/tokens.txt: .* not those of"):
        OnnxTransducer.from_dir(d)
    (d / "onnx/tokens.txt").write_text("\n".join(tokens) + "\n")
    fb = yaml.safe_load((d / "fbank.yaml").read_text())
    fb["fbank"]["frame_shift_ms"] = 12.5
    (d / "fbank.yaml").write_text(yaml.safe_dump(fb))
    with pytest.raises(ModelDirError, match="frame_shift_ms 12.5 but the model was trained with 10"):
        OnnxTransducer.from_dir(d)


def test_readme_onnx_example_prints_speech2text_text(experiment, packed_onnx, tmp_path, capsys):
    """The README's ONNX example, run as written on the fixture's packed model (its model dir and
    audio path swapped for the fixture's): it prints what Speech2Text gives, and the text the
    README shows is the one it shows for the PyTorch CLI on the same file."""
    import re

    from justkit.decode.transcribe import Speech2Text

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("The ONNX export in `model/onnx/`")
    block = re.search(r"```python\n(.*?)```\n\nprints `([^`]*)`", readme[start:], re.S)
    assert block and "OnnxTransducer.from_dir" in block.group(1)
    code, shown = block.group(1), block.group(2)
    cli_line = re.search(r"The first prints `11805_4281_000000<TAB>([^`]*)`", readme)
    assert cli_line and shown == cli_line.group(1)
    model_dir = re.search(r'from_dir\("([^"]+)"\)', code).group(1)
    audio = re.search(r'load_audio\("([^"]+)"\)', code).group(1)
    assert audio.endswith("11805_4281_000000.opus")
    wav = experiment["audio"]["pl2"]
    code = code.replace(model_dir, str(packed_onnx)).replace(audio, str(wav))
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    want = Speech2Text.from_dir(packed_onnx)(*sf.read(wav, dtype="float32"))
    assert want and printed == want + "\n"


def _ctc_experiment(experiment, path: Path) -> Path:
    """The fixture's experiment with an auxiliary CTC head (loss.w_ctc: 1) whose posteriors peak on
    a few frames and a transducer that emits fewer labels, so that the CTC path aligns most hypotheses."""
    from justkit.config import load_yaml
    from justkit.experiment import Experiment
    from justkit.models.just import JUSTModel

    d = load_yaml(experiment["exp"] / "config.yaml")
    d["loss"] = {**(d.get("loss") or {}), "w_ctc": 1.0}
    exp = Experiment.from_dict(d)
    model = JUSTModel(exp.model, exp.loss)
    state = experiment["model"].state_dict()
    with torch.no_grad():
        model.load_state_dict({**model.state_dict(), **state})
        model.ctc_head.weight.mul_(4.0)
        model.joint.out.bias[0] = 4.0   # fewer labels: most hypotheses fit the CTC frames
    exp.save(path)
    atomic_torch_save({"model": model.state_dict(), "config": exp.to_dict(), "step": 1, "epoch": 0},
                      path / "model_avg.pt")
    return path


@pytest.mark.parametrize("head", ["transducer", "ctc"])
def test_word_ctm_is_well_formed_and_equals_the_api(experiment, tmp_path, head):
    """transcribe --ctm: one line per word, 6 fields, numbers, start >= 0, duration > 0, words in
    order, not overlapping, within the audio, spelling the hypothesis; the same as the Python API's
    words; from the CTC head where the model has one (else the transducer), for greedy and beam."""
    from justkit.bin.transcribe import main
    from justkit.decode.align import read_ctm
    from justkit.decode.transcribe import Speech2Text

    exp = experiment["exp"] if head == "transducer" else _ctc_experiment(experiment, tmp_path / "exp_ctc")
    durs = {u: sf.info(str(p)).duration for u, p in experiment["audio"].items()}
    for method in ("greedy", "beam"):
        ctm_path, out = tmp_path / f"{method}.ctm", tmp_path / f"{method}.txt"
        assert main(["--model_dir", str(exp), str(experiment["dir"] / "audio"), "--method", method,
                     "--out", str(out), "--ctm", str(ctm_path)]) == 0
        hyp = read_table(out, allow_empty_value=True)
        lines = [line.split() for line in ctm_path.read_text(encoding="utf-8").splitlines()]
        assert lines and all(len(f) == 6 and f[1] == "1" for f in lines)
        ctm = read_ctm(ctm_path)
        assert set(ctm) == {u for u, t in hyp.items() if t}
        s2t = Speech2Text.from_dir(exp, method=method)
        sources = []
        for utt, words in ctm.items():
            assert " ".join(w for _, _, w, _ in words) == " ".join(hyp[utt].split())
            for (s, d, _, c), nxt in zip(words, words[1:] + [None]):
                assert s >= 0 and d > 0 and 0 <= c <= 1 and s + d <= durs[utt] + 1e-3
                if nxt is not None:
                    assert s + d <= nxt[0] + 1e-3
            x, sr = sf.read(experiment["audio"][utt], dtype="float32")
            r = s2t.transcribe([(x, sr)])[0]
            # CTC where the head exists and the labels fit its frames (a repeat needs a blank between)
            frames = int(s2t.model.frontend.output_lengths(torch.tensor([s2t.features(x, sr).shape[0]]))[0])
            toks = r.pieces
            fits = len(toks) + sum(a == b for a, b in zip(toks, toks[1:])) <= frames
            assert r.timing == ("ctc" if head == "ctc" and fits else "transducer")
            sources.append(r.timing)
            api = [(round(w.start, 3), round(w.end - w.start, 3), w.text, round(w.confidence, 3)) for w in r.words]
            assert api == [(s, d, w, c) for s, d, w, c in words]
        assert head in sources
    if head == "transducer":   # no CTC head: --timing ctc is one line and exit status 2
        assert main(["--model_dir", str(exp), str(experiment["audio"]["en1"]), "--timing", "ctc",
                     "--ctm", str(tmp_path / "x.ctm"), "--out", str(tmp_path / "x.txt")]) == 2
        assert not (tmp_path / "x.ctm").exists()
    # per piece: the pieces of the hypotheses, in order
    assert main(["--model_dir", str(exp), str(experiment["audio"]["en1"]), "--ctm", str(tmp_path / "p.ctm"),
                 "--ctm_unit", "piece", "--out", str(tmp_path / "p.txt")]) == 0
    pieces = [w for _, _, w, _ in read_ctm(tmp_path / "p.ctm").get("en1", [])]
    assert pieces == Speech2Text.from_dir(exp).transcribe([sf.read(experiment["audio"]["en1"], dtype="float32")])[0].pieces
