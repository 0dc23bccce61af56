"""Stage 1: MLS layout parser on the embedded mini-MLS, data prep end to end, bad input, download, builder."""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from justkit.corpora.prepare_mls import PrepareConfig, prepare
from justkit.datadir.tables import read_table
from justkit.corpora.download import DownloadError, download_file, extract_tar
from justkit.corpora.mls import (
    MLS_LANGUAGES,
    SPLITS,
    MLSError,
    download_language,
    find_language_dir,
    kaldi_utt_id,
    read_limited_supervision,
    read_split,
)
from justkit.datadir.validate import validate_data_dir

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tools" / "mini_mls" / "corpus"
REQUIRE = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2dur")


def copy_langs(dst: Path, langs: list[str]) -> Path:
    for lang in langs:
        name = f"mls_{MLS_LANGUAGES[lang]}_opus"
        shutil.copytree(CORPUS / name, dst / name)
    return dst


def transcript_ids(path: Path) -> list[str]:
    return [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines() if line]


# ---------------------------------------------------------------- layout parser on the embedded corpus


def test_embedded_corpus_layout_and_parser():
    for lang, name in MLS_LANGUAGES.items():
        ld = find_language_dir(CORPUS, lang)
        assert ld.path.name == f"mls_{name}_opus" and ld.audio_ext == "opus"
        train_ids = set()
        for split in SPLITS:
            rec = read_split(ld, split)
            ids = transcript_ids(ld.path / split / "transcripts.txt")
            assert rec.problems == []
            assert len(rec.utts) == len(ids) == len(set(ids)) > 0
            n_audio = sum(1 for _ in (ld.path / split / "audio").rglob("*.opus"))
            assert n_audio == len(ids), f"{lang} {split}: audio files and transcripts differ"
            for u in rec.utts:
                spk, book, idx = u.mls_id.split("_")
                assert u.audio == str(ld.path / split / "audio" / spk / book / f"{u.mls_id}.opus")
                assert u.utt == f"{lang}_{int(spk):06d}_{book}_{idx}" and u.utt.startswith(u.speaker + "_")
                assert u.text == u.text.lower() and 3 <= len(u.text.split()) <= 7
            if split == "train":
                train_ids = {u.utt for u in rec.utts}
            first = rec.utts[0].audio
            x, sr = sf.read(first)
            assert sr == 48000 and 1.0 < len(x) / sr < 6.0 and np.abs(x).max() > 0.1, first
        subs = read_limited_supervision(ld)
        assert set(subs) == {"9h", "1h", "10min"}
        assert set(subs["10min"]) < set(subs["1h"]) and not set(subs["1h"]) & set(subs["9h"])
        assert set(subs["9h"]) | set(subs["1h"]) <= train_ids
    # imbalanced like MLS: English largest, Portuguese and Polish smallest
    n_train = {l: len(transcript_ids(find_language_dir(CORPUS, l).path / "train" / "transcripts.txt"))
               for l in MLS_LANGUAGES}
    assert max(n_train, key=n_train.get) == "en"
    assert n_train["pt"] == n_train["pl"] == min(n_train.values())


def test_language_names_and_ids():
    assert kaldi_utt_id("en", "10214_10108_000000") == "en_010214_10108_000000"
    with pytest.raises(MLSError, match="not <speaker>_<book>_<utt>"):
        kaldi_utt_id("en", "10214-10108-000000")
    with pytest.raises(MLSError, match="unknown MLS language code 'xx'"):
        find_language_dir(CORPUS, "xx")


def test_flac_release_layout(tmp_path):
    """The flac release extracts to mls_<language>/ with .flac audio (16 kHz)."""
    src = CORPUS / "mls_polish_opus"
    dst = tmp_path / "mls_polish"
    (dst / "dev").mkdir(parents=True)
    ids = transcript_ids(src / "dev" / "transcripts.txt")[:3]
    lines = [l for l in (src / "dev" / "transcripts.txt").read_text(encoding="utf-8").splitlines() if l.split("\t")[0] in ids]
    (dst / "dev" / "transcripts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in ids:
        spk, book, _ = i.split("_")
        p = dst / "dev" / "audio" / spk / book / f"{i}.flac"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.zeros(16000, np.float32), 16000)
    ld = find_language_dir(tmp_path, "pl")
    assert ld.audio_ext == "flac"
    rec = read_split(ld, "dev")
    assert [u.mls_id for u in rec.utts] == sorted(ids) and rec.problems == []
    for p in (dst / "dev" / "audio").rglob("*.flac"):  # without audio checks the audio tree is not looked at
        p.rename(p.with_suffix(".opus"))
    assert find_language_dir(tmp_path, "pl", look_at_audio=False).audio_ext == "flac"
    assert find_language_dir(tmp_path, "pl").audio_ext == "opus"


# ---------------------------------------------------------------- stage 1 end to end


def _tables(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file() and "log" not in f.parts}


def test_stage1_end_to_end_two_languages(tmp_path):
    mls_root = copy_langs(tmp_path / "mls", ["pt", "pl"])
    data = tmp_path / "data"
    env = dict(os.environ, JUSTKIT_NO_INSTALL="1")
    cmd = [str(ROOT / "egs" / "mls" / "local" / "data.sh"), "--mls_root", str(mls_root),
           "--download", "false", "--langs", "pt pl", "--nj", "2", str(data)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "stage 1 done" in res.stderr and (data / "log" / "prepare_mls.log").is_file()

    for lang in ("pt", "pl"):
        ld = find_language_dir(mls_root, lang)
        for split in SPLITS:
            d = data / f"{split}_{lang}"
            assert validate_data_dir(d, require=REQUIRE) == []
            text = read_table(d / "text")
            assert len(text) == len(transcript_ids(ld.path / split / "transcripts.txt"))
            assert set(read_table(d / "utt2lang").values()) == {lang}
            for utt, path in read_table(d / "wav.scp").items():
                assert Path(path).is_absolute() and Path(path).is_file()
            durs = [float(v) for v in read_table(d / "utt2dur").values()]
            assert all(1.0 < x < 6.0 for x in durs)
            # Kaldi sort consistency: expanding spk2utt in speaker order gives utt2spk's order
            utt2spk = read_table(d / "utt2spk")
            expanded = [u for spk, us in read_table(d / "spk2utt").items() for u in us.split()]
            assert expanded == list(utt2spk)
            assert all(u.startswith(s + "_") for u, s in utt2spk.items())
        subs = read_limited_supervision(ld)
        for sub in ("9h", "1h", "10min"):
            d = data / f"train_{lang}_{sub}"
            assert validate_data_dir(d, require=REQUIRE) == []
            assert sorted(read_table(d / "text")) == subs[sub]
    assert not (data / "test").exists()
    for split in ("train", "dev"):
        d = data / split
        assert validate_data_dir(d, require=REQUIRE) == []
        langs = read_table(d / "utt2lang")
        assert set(langs.values()) == {"pt", "pl"}
        assert len(langs) == len(read_table(data / f"{split}_pt" / "text")) + len(read_table(data / f"{split}_pl" / "text"))
    assert (data / "bad_utts.txt").read_text() == ""

    before = _tables(data)
    prepare(PrepareConfig(mls_root=str(mls_root), out=str(data), langs=["pt", "pl"]))
    assert _tables(data) == before, "re-running stage 1 changed its output"


def test_missing_language_and_download_hint(tmp_path):
    copy_langs(tmp_path / "mls", ["pl"])
    with pytest.raises(MLSError, match=r"mls_portuguese_opus.*--download true"):
        prepare(PrepareConfig(mls_root=str(tmp_path / "mls"), out=str(tmp_path / "data"), langs=["pl", "pt"]))


# ---------------------------------------------------------------- bad input


def test_bad_input_reported_and_rest_kept(tmp_path):
    mls_root = copy_langs(tmp_path / "mls", ["pl"])
    lang_dir = mls_root / "mls_polish_opus"
    tr = lang_dir / "train" / "transcripts.txt"
    lines = tr.read_bytes().splitlines()
    ids = [l.split(b"\t")[0].decode() for l in lines]

    def audio(i: str) -> Path:
        spk, book, _ = i.split("_")
        return lang_dir / "train" / "audio" / spk / book / f"{i}.opus"

    missing, corrupt, empty_text, non_utf8, zero_len, one_sample = ids[:6]
    audio(missing).unlink()
    audio(corrupt).write_bytes(b"OggS" + bytes(range(256)) * 8)
    audio(zero_len).write_bytes(b"")
    sf.write(audio(one_sample), np.zeros(1, np.float32), 48000, format="OGG", subtype="OPUS")
    lines[2] = empty_text.encode() + b"\t"
    lines[3] = non_utf8.encode() + b"\tdzie\xff\xfe dobry"
    tr.write_bytes(b"\n".join(lines) + b"\n")
    orphan = "9999_8888_000007"
    (lang_dir / "train" / "audio" / "9999" / "8888").mkdir(parents=True)
    shutil.copy(audio(ids[10]), lang_dir / "train" / "audio" / "9999" / "8888" / f"{orphan}.opus")

    data = tmp_path / "data"
    counts = prepare(PrepareConfig(mls_root=str(mls_root), out=str(data), langs=["pl"], nj=1))

    rows = [l.split(" ", 3) for l in (data / "bad_utts.txt").read_text(encoding="utf-8").splitlines()]
    got = {r[1]: (r[0], r[2], r[3]) for r in rows}
    k = lambda i: kaldi_utt_id("pl", i)  # noqa: E731
    expect = {
        k(missing): (str(audio(missing)), "transcript without audio"),
        k(corrupt): (str(audio(corrupt)), "unreadable or corrupt audio"),
        k(zero_len): (str(audio(zero_len)), "empty file (0 bytes)"),
        k(one_sample): (str(audio(one_sample)), "too short: 1 sample"),
        k(empty_text): (f"{tr}:3", "empty transcript"),
        k(non_utf8): (f"{tr}:4", "not valid UTF-8"),
        k(orphan): (str(lang_dir / "train" / "audio" / "9999" / "8888" / f"{orphan}.opus"), "audio without a transcript"),
    }
    assert set(got) == set(expect)
    for utt, (path, reason) in expect.items():
        set_name, file, why = got[utt]
        assert set_name == "train_pl" and file == path and reason in why, (utt, got[utt])

    kept = read_table(data / "train_pl" / "text")
    assert len(kept) == counts["train_pl"] == len(ids) - 6
    assert not set(expect) & set(kept)
    assert validate_data_dir(data / "train_pl", require=REQUIRE) == []
    assert len(read_table(data / "train" / "text")) == len(ids) - 6
    for sub in ("9h", "1h", "10min"):  # subsets keep only good ids
        assert set(read_table(data / f"train_pl_{sub}" / "text")) <= set(kept)


# ---------------------------------------------------------------- download with resume


class _Server:
    """A local HTTP server for one archive: honours Range, cuts the first full response short."""

    def __init__(self, files: dict[str, bytes], cut_first_at: int | None):
        self.files, self.cut, self.requests = files, cut_first_at, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.cut is not None and not rng and name.endswith(".tar.gz"):
                    body, outer.cut = body[: outer.cut], None  # interrupted transfer
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mls"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _small_mls_tarball(tmp_path: Path) -> bytes:
    """mls_polish_opus.tar.gz holding the dev split of the embedded Polish corpus."""
    src = CORPUS / "mls_polish_opus"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "dev", arcname="mls_polish_opus/dev")
        tar.add(src / "metainfo.txt", arcname="mls_polish_opus/metainfo.txt")
    return buf.getvalue()


def test_download_resumes_verifies_md5_and_extracts(tmp_path):
    blob = _small_mls_tarball(tmp_path)
    md5 = hashlib.md5(blob).hexdigest()
    files = {"mls_polish_opus.tar.gz": blob, "md5sum.txt": f"{md5}  mls_polish_opus.tar.gz\n".encode()}
    root = tmp_path / "mls"
    with _Server(files, cut_first_at=len(blob) // 3) as srv:
        ld = download_language("pl", root, base_url=srv.url, config={"retry_wait_s": 0})
    archive_reqs = [r for n, r in srv.requests if n.endswith(".tar.gz")]
    assert archive_reqs == [None, f"bytes={len(blob) // 3}-"]
    assert ("md5sum.txt", None) in srv.requests
    assert ld.path == (root / "mls_polish_opus").resolve()
    assert not list(root.glob("*.part")) and not (root / "mls_polish_opus.tar.gz").exists()
    assert not list(root.glob(".*extracting"))
    rec = read_split(ld, "dev")
    assert rec.problems == [] and len(rec.utts) == len(transcript_ids(CORPUS / "mls_polish_opus" / "dev" / "transcripts.txt"))


def test_download_md5_mismatch_and_corrupt_archive(tmp_path):
    blob = _small_mls_tarball(tmp_path)
    with _Server({"x.tar.gz": blob}, cut_first_at=None) as srv:
        dest = tmp_path / "x.tar.gz"
        with pytest.raises(DownloadError, match="md5 of the download is"):
            download_file(f"{srv.url}/x.tar.gz", dest, md5="0" * 32, config={"retry_wait_s": 0})
        assert not dest.exists() and not (tmp_path / "x.tar.gz.part").exists()
    bad = tmp_path / "trunc.tar.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        extract_tar(bad, tmp_path / "out", "mls_polish_opus")
    assert not (tmp_path / "out" / "mls_polish_opus").exists()


# ---------------------------------------------------------------- the corpus builder


def _load_builder():
    spec = importlib.util.spec_from_file_location("mini_mls_build", ROOT / "tools" / "mini_mls" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_builder_says_how_to_install_espeak(monkeypatch):
    build = _load_builder()
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.BuildError, match="apt-get install espeak-ng"):
        build.check_espeak()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_builder_tiny(tmp_path):
    build = _load_builder()
    out = tmp_path / "corpus"
    cfg = build.BuildConfig(out=str(out), langs=["pl"], size="tiny", seed=3)
    build.build(cfg)
    ld = find_language_dir(out, "pl")
    for split, n in zip(SPLITS, build.SIZES["tiny"]["pl"]):
        rec = read_split(ld, split)
        assert rec.problems == [] and len(rec.utts) == n
        info = sf.info(str(rec.utts[0].audio))
        assert info.samplerate == 48000 and info.subtype == "OPUS" and 1.0 < info.duration < 6.0
    assert any(c in (ld.path / "train" / "transcripts.txt").read_text(encoding="utf-8") for c in "ąćęłńóśźż")
    subs = read_limited_supervision(ld)
    assert len(subs["1h"]) == 6 * len(subs["10min"]) and subs["9h"]
    assert "|" in (ld.path / "metainfo.txt").read_text()
    with pytest.raises(build.BuildError, match="exists; pass --force"):
        build.build(cfg)
    # the unlabelled pool: train split only, no limited-supervision lists
    build.build(build.BuildConfig(out=str(tmp_path / "pool"), langs=["pl"], size="pool", seed=3, nj=2))
    pool = tmp_path / "pool" / "mls_polish_opus"
    assert sorted(p.name for p in pool.iterdir()) == ["metainfo.txt", "train"]
    assert not (pool / "train" / "limited_supervision").exists()
    assert len(read_split(find_language_dir(tmp_path / "pool", "pl"), "train").utts) == 2 * build.SIZES["mini"]["pl"][0]
    # deterministic plan: same seed, same ids and sentences
    a = build.plan_language("pl", "tiny", 3, set())
    b = build.plan_language("pl", "tiny", 3, set())
    assert [(u.utt, u.text) for u in a] == [(u.utt, u.text) for u in b]


def test_unlabelled_pool_plan():
    """The pool (tools/mini_mls/build.py --size pool): train only, POOL_FACTOR x mini's train
    count, new speaker ids and voices, no sentence of mini (so none of its test sentences)."""
    build = _load_builder()
    used: set = set()
    minis = {lang: build.plan_language(lang, "mini", 0, used) for lang in build.LANG_NAMES}
    for lang in ("en", "pl"):
        pool = build.plan_pool(lang, 0, used, minis[lang])
        mini = minis[lang]
        assert len(pool) == build.POOL_FACTOR * build.SIZES["mini"][lang][0]
        assert {u.split for u in pool} == {"train"}
        assert not {u.spk.spk for u in pool} & {u.spk.spk for u in mini}
        assert not {u.spk.variant for u in pool} & {u.spk.variant for u in mini}
        assert len({u.spk.spk for u in pool}) == build.POOL_SPEAKERS
        assert not {u.text for u in pool} & {u.text for u in mini}
        assert not {u.utt for u in pool} & {u.utt for u in mini}


def test_prepare_train_split_only(tmp_path):
    """--splits train (an unlabelled pool has no dev/test): train_<lang> and train only."""
    counts = prepare(PrepareConfig(mls_root=str(CORPUS), out=str(tmp_path / "data"), langs=["pl"], splits=["train"]))
    assert set(counts) >= {"train_pl", "train"} and "dev_pl" not in counts
    assert not (tmp_path / "data" / "dev_pl").exists() and (tmp_path / "data" / "train" / "wav.scp").is_file()
    with pytest.raises(MLSError, match="splits"):
        PrepareConfig(mls_root=str(CORPUS), out=str(tmp_path / "x"), splits=["eval"])


# ---------------------------------------------------------------- streaming stage 1, audio checks off


def _tree(d: Path) -> dict:
    """{relative path: bytes} of every file below ``d`` but its logs."""
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file() and "log" not in f.parts}


def test_consistency_by_construction_matches_dict_check(tmp_path, monkeypatch):
    """Sets above DICT_CHECK_MAX_UTTS skip the dict-based fix/validate pass: same bytes out."""
    import justkit.corpora.prepare_mls as pm

    prepare(PrepareConfig(mls_root=str(CORPUS), out=str(tmp_path / "a"), langs=["pt", "pl"]))
    monkeypatch.setattr(pm, "DICT_CHECK_MAX_UTTS", 0)
    monkeypatch.setattr(pm, "fix_data_dir", lambda *a, **k: pytest.fail("dict-based fix ran"))
    monkeypatch.setattr(pm, "assert_valid_data_dir", lambda *a, **k: pytest.fail("dict-based check ran"))
    prepare(PrepareConfig(mls_root=str(CORPUS), out=str(tmp_path / "b"), langs=["pt", "pl"]))
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and len(a) > 50


def test_audio_checks_off_uses_segments_and_touches_no_audio(tmp_path, monkeypatch):
    import justkit.corpora.mls as mls

    probed = tmp_path / "probed"
    root = copy_langs(tmp_path / "mls", ["pl", "it"])
    prepare(PrepareConfig(mls_root=str(root), out=str(probed), langs=["pl", "it"]))
    for lang in ("pl", "it"):  # no audio at all: nothing may look for it
        for split in SPLITS:
            shutil.rmtree(root / f"mls_{MLS_LANGUAGES[lang]}_opus" / split / "audio")
    monkeypatch.setattr(mls, "audio_info", lambda *a, **k: pytest.fail("an audio header was read"))
    monkeypatch.setattr(mls.os, "walk", lambda *a, **k: pytest.fail("the audio tree was walked"))
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda p: False if p.suffix == ".opus" and pytest.fail(f"{p} stat'ed")
                        else real_is_file(p))
    seg = tmp_path / "seg"
    counts = prepare(PrepareConfig(mls_root=str(root), out=str(seg), langs=["pl", "it"], audio_checks=False))
    assert (seg / "bad_utts.txt").read_text() == ""
    a, b = _tree(probed), _tree(seg)
    assert a.keys() == b.keys()
    assert sorted(n for n in a if a[n] != b[n]) == sorted(f"{s}/utt2dur" for s in counts), "only utt2dur differs"
    for set_name in counts:
        p, s = read_table(probed / set_name / "utt2dur"), read_table(seg / set_name / "utt2dur")
        assert p.keys() == s.keys()
        worst = max(abs(float(p[u]) - float(s[u])) for u in p)
        assert worst <= 0.01, (set_name, worst)  # the mini corpus's segments.txt agrees with its audio


def test_segments_problems_and_transcript_problems(tmp_path):
    root = copy_langs(tmp_path / "mls", ["pl"])
    d = root / "mls_polish_opus" / "dev"
    shutil.rmtree(d / "audio")
    tr, sg = d / "transcripts.txt", d / "segments.txt"
    lines = tr.read_text(encoding="utf-8").splitlines()
    ids = [l.split("\t")[0] for l in lines]
    seg = {l.split("\t")[0]: l for l in sg.read_text(encoding="utf-8").splitlines()}
    no_seg, bad_seg, neg_seg, dup, bad_id = ids[0], ids[1], ids[2], ids[3], "12x_3_000001"
    del seg[no_seg]
    seg[bad_seg] = f"{bad_seg}\turl\tzero\t1.5"
    seg[neg_seg] = f"{neg_seg}\turl\t2.00\t1.00"
    sg.write_text("\n".join(seg.values()) + "\n", encoding="utf-8")
    lines += [f"{dup}\tanother text for it", f"{bad_id}\tsome text", f"{ids[5]}\t?!"]
    tr.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = tmp_path / "data"
    counts = prepare(PrepareConfig(mls_root=str(root), out=str(data), langs=["pl"], splits=["dev"], audio_checks=False))
    rows = [l.split(" ", 3) for l in (data / "bad_utts.txt").read_text(encoding="utf-8").splitlines()]
    got = {(r[1], r[2]): r[3] for r in rows}
    k = lambda i: kaldi_utt_id("pl", i)  # noqa: E731
    n = len(ids)
    assert got == {
        (k(no_seg), str(sg)): "no line in segments.txt (its duration is unknown)",
        (k(bad_seg), f"{sg}:{list(seg).index(bad_seg) + 1}"): "cannot parse the line (want <id> <url> <start> <end>)",
        (k(neg_seg), f"{sg}:{list(seg).index(neg_seg) + 1}"): "segment end 1.0 <= start 2.0",
        (k(dup), f"{tr}:{n + 1}"): f"id duplicated (first on line {ids.index(dup) + 1}); later line dropped",
        ("pl_12x_3_000001", f"{tr}:{n + 2}"): "id is not <speaker>_<book>_<utt>",
        (k(ids[5]), f"{tr}:{n + 3}"): "id duplicated (first on line 6); later line dropped",
    }
    text = read_table(data / "dev_pl" / "text")
    assert counts["dev_pl"] == len(text) == n - 3 and k(dup) in text
    assert text[k(dup)] != "another text for it"  # the first line counts
    assert validate_data_dir(data / "dev_pl", require=REQUIRE) == []
    sg.unlink()
    with pytest.raises(MLSError, match=r"segments.txt: not found.*--audio_checks true"):
        prepare(PrepareConfig(mls_root=str(root), out=str(data), langs=["pl"], splits=["dev"], audio_checks=False))


def test_prepare_cli_audio_checks_flag(tmp_path):
    from justkit.bin.prepare_mls import build_parser

    a, _ = build_parser().parse(["--mls_root", "x", "--no_audio_checks", "out"])
    assert a.audio_checks is False
    a, _ = build_parser().parse(["--mls_root", "x", "out"])
    assert a.audio_checks is True
    env = dict(os.environ, JUSTKIT_NO_INSTALL="1")
    res = subprocess.run([str(ROOT / "egs" / "mls" / "local" / "data.sh"), "--audio_checks", "maybe", str(tmp_path / "d")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "--audio_checks must be true or false" in res.stderr


def test_what_the_consistency_pass_drops_is_reported(tmp_path, monkeypatch):
    """Below DICT_CHECK_MAX_UTTS fix_data_dir still runs; an utterance it drops is a bad utterance
    named with its audio file, and is left out of the subsets and the combined set."""
    import justkit.corpora.prepare_mls as pm

    ld = find_language_dir(CORPUS, "pl")
    victim = sorted(read_limited_supervision(ld)["9h"])[0]
    real = pm.fix_data_dir
    monkeypatch.setattr(pm, "fix_data_dir", lambda d: real(d, drop_utts={victim: "test"} if d.name == "train_pl" else {}))
    data = tmp_path / "data"
    prepare(PrepareConfig(mls_root=str(CORPUS), out=str(data), langs=["pl"], splits=["train"]))
    spk, book, idx = victim.split("_")[1:]
    audio = ld.path / "train" / "audio" / str(int(spk)) / book / f"{int(spk)}_{book}_{idx}.opus"
    assert (data / "bad_utts.txt").read_text() == f"train_pl {victim} {audio} fix_data_dir: dropped by caller: test\n"
    assert victim not in read_table(data / "train_pl_9h" / "text") and victim not in read_table(data / "train" / "text")


def test_has_words_agrees_with_normalize():
    """Stage 1's fast 'anything left after normalisation?' test is normalize(...) != '' exactly."""
    import random

    from justkit.text.normalize import has_words, normalize

    cases = ["", "?!", "...", " - ", "'", "\u0301", "a\u0301", "\u00c9T\u00c9", "'t", "«»", "_", "__x__", "\x00",
             "\u2019s", "١٢", "\u2163", "½", "ß", "\u3000", "\u200b", "e\u0301!", "ǅ", "ﬁ", "Ⅻ", "²"]
    rng = random.Random(0)
    alphabet = [chr(c) for c in list(range(0x20, 0x250)) + list(range(0x300, 0x370)) + list(range(0x2000, 0x2200))
                + [0x3000, 0x3001, 0x4e00, 0x0660, 0x0e01, 0xff01, 0xfb01]]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(20000)]
    for text in cases:
        for lang in ("en", "nl"):
            assert has_words(text, lang) == (normalize(text, lang) != ""), (text, lang)


def test_lm_text_download_resumes_verifies_md5_and_prepares_without_dev_test(tmp_path):
    """mls_lm_<language>.tar.gz: fetched as the audio is (resume, md5, atomic extraction), then
    normalised with the transcripts' normaliser and every dev/test sentence removed."""
    from justkit.bin.prepare_lm_text import main as prepare_main
    from justkit.corpora.mls import download_lm, find_lm_text

    dev_pl = (CORPUS / "mls_polish_opus" / "dev" / "transcripts.txt").read_text(encoding="utf-8").splitlines()
    dev_sentences = [line.split("\t", 1)[1] for line in dev_pl]
    lines = ["Pierwsze zdanie, z interpunkcją!", dev_sentences[0].upper() + ".", "", "drugie zdanie"] * 50
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("mls_lm_polish/data.txt", "\n".join(lines).encode()), ("mls_lm_polish/3-gram_lm.arpa", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    md5 = hashlib.md5(blob).hexdigest()
    root = tmp_path / "mls"
    with pytest.raises(MLSError, match=r"mls_lm_polish/data\.txt: no LM text for language pl"):
        find_lm_text(root, "pl")
    files = {"mls_lm_polish.tar.gz": blob, "md5sum.txt": f"{md5}  mls_lm_polish.tar.gz\n".encode()}
    with _Server(files, cut_first_at=len(blob) // 2) as srv:
        path = download_lm("pl", root, base_url=srv.url, config={"retry_wait_s": 0})
    assert [r for n, r in srv.requests if n.endswith(".tar.gz")] == [None, f"bytes={len(blob) // 2}-"]
    assert path == root / "mls_lm_polish" / "data.txt" and not (root / "mls_lm_polish.tar.gz").exists()
    dev = tmp_path / "data" / "dev"
    dev.mkdir(parents=True)
    (dev / "text").write_text(f"pl_1 {dev_sentences[0]}\n", encoding="utf-8")
    (dev / "utt2lang").write_text("pl_1 pl\n")
    out = tmp_path / "data" / "lm_train"
    assert prepare_main(["--mls_root", str(root), "--langs", "pl", "--exclude", str(dev), str(out)]) == 0
    text = [line.split(" ", 1)[1] for line in (out / "text").read_text(encoding="utf-8").splitlines()]
    assert text == ["pierwsze zdanie z interpunkcją", "drugie zdanie"] * 50
    assert json.loads((out / "stats.json").read_text())["pl"] == {"kept": 100, "excluded": 50, "empty": 50}
    (root / "mls_lm_polish" / "data.txt").write_text("")
    with pytest.raises(MLSError, match="is empty"):
        find_lm_text(root, "pl")
    assert prepare_main(["--source", f"pl={tmp_path / 'none.txt'}", str(out)]) == 2   # one line, exit 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_builder_word_ctm_is_the_truth_of_the_audio(tmp_path):
    """build.py --word_ctm: one line per word of every test utterance, in order, starting after the
    leading silence; the last word ends where the synthesised audio's trailing silence begins."""
    import numpy as np

    from justkit.decode.align import read_ctm

    build = _load_builder()
    out = tmp_path / "truth.ctm"
    assert build.main(["--word_ctm", str(out), "--size", "tiny", "--langs", "pl de", "--seed", "3"]) == 0
    ctm = read_ctm(out)
    used: set = set()
    plans = {lang: build.plan_language(lang, "tiny", 3, used) for lang in build.LANG_NAMES}
    tests = {lang: sorted((u for u in plans[lang] if u.split == "test"), key=lambda u: u.utt) for lang in ("pl", "de")}
    assert sorted(ctm) == sorted(u.utt for v in tests.values() for u in v)
    for lang, utts in tests.items():
        for job, u in zip(build.synth_jobs(lang, utts, 3), utts):
            words = ctm[u.utt]
            assert [w for _, _, w, _ in words] == u.text.split()
            assert all(a[0] + a[1] == pytest.approx(b[0], abs=2e-3) for a, b in zip(words, words[1:]))
            lead, trail = build.silences(np.random.default_rng(job[4]))
            assert words[0][0] >= lead / build.SAMPLE_RATE - 1e-3
            wav, _ = build.synthesize(job)
            assert words[-1][0] + words[-1][1] + trail / build.SAMPLE_RATE == pytest.approx(
                len(wav) / build.SAMPLE_RATE, abs=2e-3)
