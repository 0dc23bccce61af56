"""Code-switching test set builder: lengths, texts, languages, determinism, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from justkit.bin.make_codeswitch import main
from justkit.corpora.codeswitch import CodeSwitchConfig, make_codeswitch
from justkit.datadir.tables import DataDirError, read_table, write_table

SR = 16000


def _lang_dir(root: Path, lang: str, n: int = 3, sr: int = SR) -> Path:
    d = root / f"test_{lang}"
    d.mkdir(parents=True)
    rng = np.random.default_rng(sum(map(ord, lang)))
    tables = {k: {} for k in ("wav.scp", "text", "utt2spk", "utt2lang")}
    for i in range(n):
        utt = f"{lang}1_b_{i:02d}"
        path = d / f"{utt}.flac"
        sf.write(path, (0.1 * rng.standard_normal(1600 * (i + 1))).astype(np.float32), sr)
        tables["wav.scp"][utt] = str(path)
        tables["text"][utt] = f"{lang} words number {i}"
        tables["utt2spk"][utt] = f"{lang}1"
        tables["utt2lang"][utt] = lang
    for name, t in tables.items():
        write_table(d / name, t)
    return d


@pytest.fixture
def inputs(tmp_path):
    return [_lang_dir(tmp_path, lang) for lang in ("en", "de", "pl")]


def test_builder_lengths_texts_languages(tmp_path, inputs):
    cfg = CodeSwitchConfig(num=8, seed=0, silence_sec=0.25)
    out = tmp_path / "test_cs"
    utts = make_codeswitch(inputs, out, cfg)
    assert len(utts) == 8
    wav, text, lang = read_table(out / "wav.scp"), read_table(out / "text"), read_table(out / "utt2lang")
    dur, src, spk = read_table(out / "utt2dur"), read_table(out / "cs_sources"), read_table(out / "utt2spk")
    assert read_table(out / "spk2utt") == {u: u for u in utts}
    by_utt = {}
    for d in inputs:
        t, w = read_table(d / "text"), read_table(d / "wav.scp")
        l = read_table(d / "utt2lang")
        by_utt.update({u: (t[u], w[u], l[u]) for u in t})
    for u in utts:
        s1, s2 = src[u].split()
        l1, l2 = lang[u].split("-")
        assert l1 != l2 and (l1, l2) == (by_utt[s1][2], by_utt[s2][2])
        assert u.endswith(f"_{l1}-{l2}") and spk[u] == u
        assert text[u] == f"{by_utt[s1][0]} {by_utt[s2][0]}"
        a, sr = sf.read(wav[u], dtype="float32")
        a1, _ = sf.read(by_utt[s1][1], dtype="float32")
        a2, _ = sf.read(by_utt[s2][1], dtype="float32")
        assert sr == SR and Path(wav[u]).parent == out / "data"
        assert len(a) == len(a1) + int(0.25 * SR) + len(a2)
        assert float(dur[u]) == pytest.approx(len(a) / SR, abs=1e-4)
        # the parts are where they should be (16-bit FLAC: equal to within quantisation)
        assert np.allclose(a[: len(a1)], a1, atol=1e-4)
        assert np.all(a[len(a1) : len(a1) + int(0.25 * SR)] == 0)
        assert np.allclose(a[-len(a2) :], a2, atol=1e-4)
    assert not list((out / "data").glob(".*.tmp"))


def test_builder_is_deterministic(tmp_path, inputs):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_codeswitch(inputs, a, CodeSwitchConfig(num=6, seed=3))
    make_codeswitch(list(reversed(inputs)), b, CodeSwitchConfig(num=6, seed=3))  # order of dirs irrelevant
    make_codeswitch(inputs, c, CodeSwitchConfig(num=6, seed=4))
    for name in ("text", "utt2lang", "cs_sources", "utt2dur"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "cs_sources").read_bytes() != (c / "cs_sources").read_bytes()
    for f in sorted((a / "data").iterdir()):
        assert f.read_bytes() == (b / "data" / f.name).read_bytes()


def test_cli_and_errors(tmp_path, inputs, capsys):
    out = tmp_path / "cs"
    assert main(["--seed", "0", "--num", "4", *map(str, inputs), str(out)]) == 0
    assert len(read_table(out / "text")) == 4
    # missing input dir: named
    assert main(["--num", "2", str(inputs[0]), str(tmp_path / "test_xx"), str(tmp_path / "o")]) == 2
    assert "test_xx: input data dir not found" in capsys.readouterr().err
    # one language only
    with pytest.raises(DataDirError, match="at least two languages"):
        make_codeswitch([inputs[0]], tmp_path / "o2", CodeSwitchConfig(num=2))
    # wrong sample rate: names the utterance and file
    bad = _lang_dir(tmp_path / "bad", "it", n=1, sr=8000)
    with pytest.raises(DataDirError, match=r"it1_b_00: .* is 8000 Hz, expected 16000"):
        make_codeswitch([bad, inputs[0]], tmp_path / "o3", CodeSwitchConfig(num=4, seed=1))
    assert not (tmp_path / "o3" / "data").exists() or not list((tmp_path / "o3" / "data").iterdir())
    # utterance missing from text: names file and utterance
    (inputs[1] / "text").write_text("de1_b_00 x\n")
    with pytest.raises(DataDirError, match=r"test_de/text: utterance de1_b_01"):
        make_codeswitch(inputs, tmp_path / "o4", CodeSwitchConfig(num=2))


def test_cli_rerun_skips_when_unchanged(tmp_path, inputs, capfd):
    """Stage 2's code-switch set is not rebuilt when its inputs and options are those of the finished set."""
    out = tmp_path / "cs"
    args = ["--seed", "0", "--num", "4", *map(str, inputs), str(out)]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capfd.readouterr()
    assert main(args) == 0
    err = capfd.readouterr().err
    assert f"{out}: up to date" in err and "skipped" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert main(["--seed", "1", *args[2:]]) == 0
    assert "making it: config codeswitch.seed: 0 -> 1" in capfd.readouterr().err
