"""egs/TEMPLATE: stage 1 (local/data.sh with the TSV-layout preparer) and the recipe files' shape."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from justkit.datadir.tables import read_table

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "egs/TEMPLATE"


def _corpus(root: Path) -> None:
    for lang in ("en", "pl"):
        for split in ("train", "dev", "test"):
            d = root / lang / "audio"
            d.mkdir(parents=True, exist_ok=True)
            lines = []
            for i in range(2):
                wav = d / f"{split}{i}.wav"
                sf.write(wav, np.zeros(8000 * (i + 1), dtype=np.float32), 16000)
                lines.append(f"u{i}\tspk{i}\taudio/{wav.name}\t{lang} Text, number {i}!")
            (root / lang / f"{split}.tsv").write_text("# utt\tspk\taudio\ttext\n" + "\n".join(lines) + "\n")


def _data_sh(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JUSTKIT_NO_INSTALL="1")
    return subprocess.run([str(TEMPLATE / "local/data.sh"), *args], cwd=TEMPLATE, env=env,
                          capture_output=True, text=True, timeout=120)


def test_template_stage1_tsv_layout(tmp_path):
    _corpus(tmp_path / "corpus")
    r = _data_sh("--corpus_root", str(tmp_path / "corpus"), "--langs", "en pl", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    data = tmp_path / "data"
    for lang in ("en", "pl"):
        for split in ("train", "dev", "test"):
            d = data / f"{split}_{lang}"
            assert read_table(d / "utt2lang") == {f"{lang}_spk0_u0": lang, f"{lang}_spk1_u1": lang}
            assert read_table(d / "utt2dur") == {f"{lang}_spk0_u0": "0.500", f"{lang}_spk1_u1": "1.000"}
            assert read_table(d / "text")[f"{lang}_spk1_u1"] == f"{lang} Text, number 1!"
            assert Path(read_table(d / "wav.scp")[f"{lang}_spk0_u0"]).is_file()
    assert len(read_table(data / "train" / "wav.scp")) == 4 and len(read_table(data / "dev" / "utt2spk")) == 4
    # a malformed line: the file, line and id are named, exit status 1
    (tmp_path / "corpus/pl/dev.tsv").write_text("u9\tspk9\taudio/missing.wav\tx\n")
    r = _data_sh("--corpus_root", str(tmp_path / "corpus"), "--langs", "en pl", str(tmp_path / "data2"))
    assert r.returncode != 0 and "pl/dev.tsv:1: id u9: cannot read audio" in r.stderr


def test_template_and_example_recipe_files():
    for recipe in ("TEMPLATE", "mini_enpl"):
        d = ROOT / "egs" / recipe
        for f in ("run.sh", "path.sh", "cmd.sh", "local/data.sh", "conf/decode.yaml", "conf/fbank.yaml",
                  "conf/tokenizer.yaml", "conf/train_just.yaml", "conf/model/mini.yaml"):
            assert (d / f).is_file(), f"{recipe}/{f}"
        assert os.access(d / "run.sh", os.X_OK) and os.access(d / "local/data.sh", os.X_OK)
        assert (d / "utils").is_symlink() and (d / "utils").resolve() == ROOT / "utils"
    # Recipes share what is the same through links into the template; each keeps what differs.
    for recipe in ("mls", "mini_enpl"):
        d = ROOT / "egs" / recipe
        for f in ("asr.sh", "path.sh", "cmd.sh", "conf/decode.yaml", "conf/fbank.yaml", "conf/fbank_compressed.yaml",
                  "conf/model", "conf/train"):
            assert (d / f).is_symlink() and (d / f).resolve() == (TEMPLATE / f).resolve(), f"{recipe}/{f}"
        assert not (d / "local/data.sh").is_symlink() and not (d / "run.sh").is_symlink()
    # the template refuses to run without languages instead of guessing
    r = subprocess.run([str(TEMPLATE / "run.sh"), "--stop_stage", "1"], cwd=TEMPLATE,
                       env=dict(os.environ, JUSTKIT_NO_INSTALL="1"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "set --langs" in r.stderr


def test_setup_sh_makes_a_recipe_that_links_the_template(tmp_path):
    egs = tmp_path / "egs"
    egs.mkdir()
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    import shutil

    shutil.copytree(TEMPLATE, egs / "TEMPLATE", symlinks=True)
    r = subprocess.run(["bash", str(egs / "TEMPLATE/setup.sh"), str(egs / "mycorpus")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    d = egs / "mycorpus"
    for f in ("asr.sh", "path.sh", "cmd.sh", "utils", "conf/decode.yaml", "conf/fbank.yaml", "conf/model", "conf/train"):
        assert (d / f).is_symlink() and (d / f).exists(), f
    for f in ("run.sh", "local/data.sh", "conf/tokenizer.yaml", "conf/train_just.yaml"):
        assert (d / f).is_file() and not (d / f).is_symlink(), f
    # a recipe that already exists is left alone
    r = subprocess.run(["bash", str(egs / "TEMPLATE/setup.sh"), str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "exists" in r.stderr
