"""lhotse round trip (issue 24, item 7): the mini corpus' Polish test set, as stage 1 writes it (48 kHz opus)
and as stages 2-3 leave it (16 kHz FLAC + fbank), to lhotse manifests and back gives the same tables and
features; lhotse reads the audio and features justkit wrote; lhotse is imported by the converter only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from justkit.bin.lhotse_convert import main
from justkit.datadir.tables import read_table

lhotse = pytest.importorskip("lhotse")  # optional dependency (tools/requirements.txt installs it)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / "tools" / "venv" / "bin"
TABLES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """<tmp>/data/test_pl (stage 1), dump/raw/test_pl (stage 2), dump/fbank/test_pl (stage 3) of the mini corpus."""
    from justkit.corpora.mls import MLS_LANGUAGES
    from justkit.corpora.prepare_mls import PrepareConfig, prepare

    r = tmp_path_factory.mktemp("lhotse")
    name = f"mls_{MLS_LANGUAGES['pl']}_opus"
    (r / "mls").mkdir()
    (r / "mls" / name).symlink_to(ROOT / "tools" / "mini_mls" / "corpus" / name)
    prepare(PrepareConfig(mls_root=str(r / "mls"), out=str(r / "data"), langs=["pl"], splits=["test"]))
    (r / "utils").symlink_to(ROOT / "utils")
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for cmd in (["utils/resample_data_dir.sh", "--nj", "2", "data/test_pl", "dump/raw/test_pl"],
                ["utils/make_fbank.sh", "--nj", "2", "--config", str(ROOT / "egs/mls/conf/fbank.yaml"),
                 "dump/raw/test_pl", "dump/fbank/test_pl"]):
        p = subprocess.run(cmd, cwd=r, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
    return r


@pytest.fixture
def in_dir(sets, monkeypatch):
    monkeypatch.chdir(sets)  # the stages' paths are relative to the recipe dir
    return sets


def test_stage1_dir_round_trip(in_dir):
    assert main(["to_lhotse", "data/test_pl", "lh"]) == 0
    recs = lhotse.RecordingSet.from_file("lh/justkit_recordings_test_pl.jsonl.gz")
    sups = {s.id: s for s in lhotse.SupervisionSet.from_file("lh/justkit_supervisions_test_pl.jsonl.gz")}
    text, lang, spk = (read_table(f"data/test_pl/{n}") for n in ("text", "utt2lang", "utt2spk"))
    assert len(recs) == len(sups) == len(text) == 18
    for u, s in sups.items():
        assert (s.text, s.language, s.speaker, s.recording_id, s.start) == (text[u], lang[u], spk[u], u, 0)
    from justkit.frontend.audio import load_audio

    r = next(iter(recs))  # lhotse decodes the opus justkit listed, to the length recorded
    x = r.load_audio()
    y, sr = load_audio(read_table("data/test_pl/wav.scp")[r.id], r.id)
    assert r.sampling_rate == sr == 48000 and x.shape == (1, r.num_samples) and abs(len(y) - r.num_samples) <= 1
    assert main(["from_lhotse", "--part", "test_pl", "lh", "back/test_pl"]) == 0
    for n in TABLES:
        assert Path(f"back/test_pl/{n}").read_bytes() == Path(f"data/test_pl/{n}").read_bytes(), n
    dur, back = read_table("data/test_pl/utt2dur"), read_table("back/test_pl/utt2dur")
    assert dur.keys() == back.keys() and all(abs(float(dur[u]) - float(back[u])) < 2e-3 for u in dur)
    assert not Path("back/test_pl/feats.scp").exists() and not Path("back/test_pl/segments").exists()


def test_fbank_dir_round_trip_features_in_place(in_dir):
    assert main(["to_lhotse", "dump/fbank/test_pl", "lh"]) == 0
    cuts = lhotse.CutSet.from_file("lh/justkit_cuts_test_pl.jsonl.gz")
    scp = read_table("dump/fbank/test_pl/feats.scp")
    assert sorted(c.id for c in cuts) == sorted(scp)
    for c in cuts:  # lhotse reads the very features justkit stored (kaldi_native_io), nothing copied
        assert c.features.storage_type == "kaldiio" and c.supervisions[0].language == "pl"
        np.testing.assert_array_equal(c.load_features(), kaldiio.load_mat(scp[c.id]))
        assert c.features.frame_shift == 0.01 and c.features.sampling_rate == 16000
    assert Path("lh/justkit_fbank_test_pl.yaml").read_bytes() == Path("dump/fbank/test_pl/conf/fbank.yaml").read_bytes()
    assert main(["from_lhotse", "--part", "test_pl", "lh", "back/fbank_test_pl"]) == 0
    for n in TABLES + ("utt2dur", "feats.scp", "utt2num_frames", "feat_dim", "conf/fbank.yaml"):
        assert Path(f"back/fbank_test_pl/{n}").read_bytes() == Path(f"dump/fbank/test_pl/{n}").read_bytes(), n


def test_features_in_other_lhotse_storage_are_copied_to_an_ark(in_dir):
    """icefall's features live in lhotse storage (lilcom, numpy files): back, they go into a kaldiio ark."""
    from lhotse.features.io import NumpyFilesWriter
    from lhotse.utils import fastcopy

    main(["to_lhotse", "dump/fbank/test_pl", "lh"])
    cuts = lhotse.CutSet.from_file("lh/justkit_cuts_test_pl.jsonl.gz")
    with NumpyFilesWriter("lh/npy") as w:
        moved = lhotse.CutSet.from_cuts(
            fastcopy(c, features=fastcopy(c.features, storage_type=w.name, storage_path=w.storage_path,
                                          storage_key=w.write(c.id, c.load_features()))) for c in cuts)
    moved.to_file("lh/npy_cuts.jsonl.gz")
    assert main(["from_lhotse", "--part", "test_pl", "--cuts", "lh/npy_cuts.jsonl.gz", "lh", "back/npy"]) == 0
    got = read_table("back/npy/feats.scp")
    assert all(v.startswith("back/npy/data/feats.ark:") for v in got.values())
    ref = read_table("dump/fbank/test_pl/feats.scp")
    for u in ref:
        np.testing.assert_array_equal(kaldiio.load_mat(got[u]), kaldiio.load_mat(ref[u]))
    assert read_table("back/npy/utt2num_frames") == read_table("dump/fbank/test_pl/utt2num_frames")


def test_lhotse_is_optional_and_bad_input_is_one_line(in_dir, capsys):
    code = ("import sys, justkit.bin.lhotse_convert, justkit.datadir.lhotse_io; "
            "assert 'lhotse' not in sys.modules; sys.modules['lhotse'] = None; "
            "sys.exit(justkit.bin.lhotse_convert.main(['to_lhotse', 'data/test_pl', 'x']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "needs lhotse, an optional dependency: pip install lhotse" in p.stderr
    assert "Traceback" not in p.stderr
    assert main(["from_lhotse", "--part", "nope", "lh", "back/x"]) == 2
    assert "lh/justkit_recordings_nope.jsonl.gz: manifest not found" in capsys.readouterr().err
    Path("piped").mkdir(exist_ok=True)
    Path("piped/wav.scp").write_text("u1 sox a.wav -t wav - |\n")
    assert main(["to_lhotse", "piped", "lh"]) == 2
    assert "piped/wav.scp: recording u1: piped commands are not converted" in capsys.readouterr().err
