"""Honest re-runs (issue 24, item 6): stages 2-4 skip a step whose inputs, config and outputs are unchanged,
say so, and otherwise say what they redo and why (justkit/stamp.py; utils/resample_data_dir.sh,
utils/make_fbank.sh, justkit.bin.compute_cmvn, justkit.bin.train_tokenizer, justkit.bin.make_codeswitch)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from justkit import stamp

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / "tools" / "venv" / "bin"
UTTS = [f"spk{s}_{i:04d}" for s in "AB" for i in range(3)]


def tone(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 48000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, recipe_dir):
    """A recipe-like dir: utils -> the repo's, conf/fbank.yaml, data/test with six 48 kHz FLACs."""
    r = recipe_dir(tmp_path_factory.mktemp("skip"))
    d = r / "data/test"
    d.mkdir(parents=True)
    for i, u in enumerate(UTTS):
        sf.write(r / f"corpus/{u}.flac", tone(24000 + 4801 * i, i), 48000)
    (d / "wav.scp").write_text("".join(f"{u} corpus/{u}.flac\n" for u in UTTS))
    (d / "text").write_text("".join(f"{u} words of {u[-1]} and more\n" for u in UTTS))
    (d / "utt2spk").write_text("".join(f"{u} {u[:4]}\n" for u in UTTS))
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u for u in UTTS if u.startswith(s))}\n" for s in ("spkA", "spkB")))
    (d / "utt2lang").write_text("".join(f"{u} {'en' if u < 'spkB' else 'pl'}\n" for u in UTTS))
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return {"dir": r, "env": env}


def run(recipe, *args, check=True) -> str:
    p = subprocess.run(list(args), cwd=recipe["dir"], env=recipe["env"], capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def mtimes(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.stat().st_mtime_ns for p in d.rglob("*")
            if p.is_file() and not p.name.startswith(".") and "log" not in p.parts and "split" not in p.parts}


RESAMPLE = ("utils/resample_data_dir.sh", "--nj", "2", "--fs", "16000", "data/test", "dump/raw/test")
FBANK = ("utils/make_fbank.sh", "--nj", "2", "--config", "conf/fbank.yaml", "dump/raw/test", "dump/fbank/test")
CMVN = (str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", "dump/fbank/test", "dump/fbank/test/cmvn.ark")


def test_stage2_skips_when_unchanged_and_counts_what_it_did(recipe):
    r = recipe["dir"]
    out = run(recipe, *RESAMPLE)
    assert "making it: no record of a finished run" in out
    assert "done: dump/raw/test (6 utterances: 6 resampled, 0 already done by an earlier run (skipped), 0 bad)" in out
    before = mtimes(r / "dump/raw/test")
    out = run(recipe, *RESAMPLE)
    assert re.search(r"dump/raw/test: up to date \(same inputs and config; finished [0-9: -]+: "
                     r"utterances 6, bad 0\): skipped", out), out
    assert "resampling" not in out and mtimes(r / "dump/raw/test") == before  # nothing rewritten
    # One source file replaced: only it is resampled again, and the console says so.
    sf.write(r / f"corpus/{UTTS[2]}.flac", tone(30000, 99), 48000)
    out = run(recipe, *RESAMPLE)
    assert "making it: files listed in data/test/wav.scp changed (6 files; was 6)" in out
    assert "(6 utterances: 1 resampled, 5 already done by an earlier run (skipped), 0 bad)" in out
    assert sf.info(r / "dump/raw/test" / read_wav(r)[UTTS[2]]).frames == 10000
    # A removed output is found; a changed option redoes all.
    flac = r / "dump/raw/test" / read_wav(r)[UTTS[0]]
    flac.unlink()
    out = run(recipe, *RESAMPLE)
    assert "making it: output files under dump/raw/test/data changed (5 files; 6 when the step finished)" in out
    assert "1 resampled, 5 already done" in out and flac.is_file()
    out = run(recipe, *RESAMPLE[:4], "8000", *RESAMPLE[5:])
    assert 'making it: config opt.fs: "16000" -> "8000"' in out and "6 resampled, 0 already done" in out
    out = run(recipe, *RESAMPLE)
    assert "6 resampled" in out
    assert "up to date" in run(recipe, *RESAMPLE)


def read_wav(r: Path) -> dict:
    rows = (r / "dump/raw/test/wav.scp").read_text().split("\n")
    return {u: str(Path(p).relative_to("dump/raw/test")) for u, p in (x.split() for x in rows if x)}


def test_stage3_and_cmvn_skip_when_unchanged_and_redo_on_any_change(recipe):
    r = recipe["dir"]
    if not (r / "dump/raw/test/.stamp.json").exists():
        run(recipe, *RESAMPLE)
    out = run(recipe, *FBANK)
    assert "fbank of 6 utterances computed, 0 bad" in out
    out = run(recipe, *CMVN)
    assert "making it: no record" in out
    fb, cmvn = mtimes(r / "dump/fbank/test"), (r / "dump/fbank/test/cmvn.ark").stat().st_mtime_ns
    out = run(recipe, *FBANK)
    assert "dump/fbank/test: up to date" in out and "skipped" in out and "fbank of" not in out
    out = run(recipe, *CMVN)
    assert "dump/fbank/test/cmvn.ark: up to date" in out and "skipped" in out
    assert mtimes(r / "dump/fbank/test") == fb and (r / "dump/fbank/test/cmvn.ark").stat().st_mtime_ns == cmvn

    # A changed fbank option is named; the features are recomputed and so are the CMVN stats.
    conf = (r / "conf/fbank.yaml").read_text()
    (r / "conf/fbank40.yaml").write_text(conf.replace("num_mel_bins: 80", "num_mel_bins: 40"))
    out = run(recipe, *FBANK[:4], "conf/fbank40.yaml", *FBANK[5:])
    assert "making it: config fbank.num_mel_bins: 80 -> 40" in out
    out = run(recipe, *CMVN)
    assert "making it:" in out and "dump/fbank/test/data" not in out
    import kaldiio

    assert kaldiio.load_mat(str(r / "dump/fbank/test/cmvn.ark")).shape == (2, 41)

    # A failing run (audio at a rate the config does not expect) leaves no stamp: the next run redoes.
    (r / "conf/fbank8k.yaml").write_text(conf.replace("sample_frequency: 16000", "sample_frequency: 8000"))
    assert "sample_frequency: 8000" in (r / "conf/fbank8k.yaml").read_text()
    out = run(recipe, *FBANK[:4], "conf/fbank8k.yaml", *FBANK[5:], check=False)
    assert "fbank failed" in out and not (r / "dump/fbank/test/.stamp.json").exists()
    out = run(recipe, *FBANK)
    assert "making it: no record of a finished run" in out and "fbank of 6 utterances computed" in out
    # An output changed behind its back is found (here: a shard removed).
    (r / "dump/fbank/test/data/feats.2.ark").unlink()
    out = run(recipe, *FBANK)
    assert "making it: output files under dump/fbank/test/data changed (3 files; 4 when the step finished)" in out
    assert "up to date" in run(recipe, *FBANK)
    # raw features: the CMVN share is part of the config
    raw = ("utils/make_fbank.sh", "--feats_type", "raw", "--cmvn_fraction", "1", "--nj", "2", "--config",
           "conf/fbank.yaml", "dump/raw/test", "dump/onthefly/test")
    assert "6 utterances counted" in run(recipe, *raw)
    assert "up to date" in run(recipe, *raw)
    out = run(recipe, *raw[:4], "0.5", *raw[5:])
    assert 'making it: config opt.cmvn_fraction: "1" -> "0.5"' in out


def test_stage4_tokenizer_skips_when_unchanged(recipe):
    r = recipe["dir"]
    tok = (str(VENV_BIN / "python"), "-m", "justkit.bin.train_tokenizer", "--tokenizer.vocab_size", "20",
           "--tokenizer.hard_vocab_limit", "false", "--text", "data/test/text", "--utt2lang", "data/test/utt2lang",
           "--out", "data/token")
    out = run(recipe, *tok)
    assert "making it: no record" in out and "vocab size" in out
    model = (r / "data/token/spm.model").stat().st_mtime_ns
    out = run(recipe, *tok)
    assert "data/token: up to date" in out and "skipped" in out and "vocab size" not in out
    assert (r / "data/token/spm.model").stat().st_mtime_ns == model
    out = run(recipe, *tok[:4], "18", *tok[5:])
    assert "making it: config tokenizer.vocab_size: 20 -> 18" in out
    text = (r / "data/test/text").read_text()
    (r / "data/test/text").write_text(text.replace("more", "less"))
    out = run(recipe, *tok[:4], "18", *tok[5:])
    assert "making it: input data/test/text changed" in out
    (r / "data/test/text").write_text(text)


def test_stamp_compares_values_not_types_and_names_every_change(tmp_path):
    (tmp_path / "a").write_text("x 1\n")
    fp = stamp.fingerprint({"train": {"betas": (0.9, 0.98), "lr": 1e-3}}, [str(tmp_path / "a")])
    st = tmp_path / ".stamp.json"
    stamp.write(st, "test", fp)
    assert stamp.check(st, stamp.fingerprint({"train": {"betas": [0.9, 0.98], "lr": 1e-3}}, [str(tmp_path / "a")])) is None
    why = stamp.check(st, stamp.fingerprint({"train": {"betas": [0.9, 0.99]}}, [str(tmp_path / "a")]))
    assert why == "config train.betas: [0.9, 0.98] -> [0.9, 0.99]; config train.lr: 0.001 -> (unset)"
    st.write_text("{ torn")
    assert stamp.check(st, fp).startswith("no record of a finished run")
    with pytest.raises(stamp.StampError, match="nope: input file not found"):
        stamp.fingerprint({}, [str(tmp_path / "nope")])
