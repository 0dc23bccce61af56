"""Stages 2-3 end to end: utils/resample_data_dir.sh, utils/make_fbank.sh (nj=2), compute_cmvn.

Bad audio (missing, corrupt, too short for a frame) is named in bad_utts.txt and dropped;
a job killed half-way (it blocks on a FIFO, then gets SIGKILL) leaves nothing that a later
stage reads; re-runs are safe and give identical outputs.
"""
import errno
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from justkit.frontend.audio import load_audio
from justkit.datadir.tables import read_table
from justkit.frontend.fbank import compute_fbank, load_fbank_config
from justkit.frontend.resample import resample

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / "tools" / "venv" / "bin"
GOOD = ["spkA_0001", "spkA_0002", "spkA_0003", "spkA_0004", "spkB_0003", "spkB_0004"]
SHORT = "spkB_0002"   # 600 samples at 48 kHz -> 200 at 16 kHz: shorter than one fbank frame
MISSING = "spkA_0005"
CORRUPT = "spkB_0001"
LAST = "spkB_0004"    # sorted last: the utterance job 2 of 2 is killed on
TIMEOUT = 240


def signal_48k(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 48000
    f0 = rng.uniform(100, 250)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)


def write_dir(d: Path, wav: dict, text: dict):
    d.mkdir(parents=True, exist_ok=True)
    ids = sorted(wav)
    (d / "wav.scp").write_text("".join(f"{u} {wav[u]}\n" for u in ids))
    (d / "text").write_text("".join(f"{u} {text[u]}\n" for u in ids))
    (d / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in ids))
    # A code-switch style language code passes through stages 2-3 (languages are stage 1's to check).
    (d / "utt2lang").write_text("".join(f"{u} {'en-de' if u == 'spkB_0003' else 'en'}\n" for u in ids))
    spk = {}
    for u in ids:
        spk.setdefault(u.split("_")[0], []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, recipe_dir):
    """A recipe-like dir (utils -> repo utils, conf/fbank.yaml) with data/test of 48 kHz opus."""
    r = recipe_dir(tmp_path_factory.mktemp("recipe"))
    audio = r / "corpus"
    wav, text = {}, {}
    for i, u in enumerate(GOOD + [SHORT]):
        n = 600 if u == SHORT else int(48000 * (0.5 + 0.1 * i)) + i  # lengths not divisible by 3 too
        sf.write(audio / f"{u}.opus", signal_48k(n, i), 48000, format="OGG", subtype="OPUS")
        wav[u] = str(audio / f"{u}.opus")
    wav[MISSING] = str(audio / "no_such_file.opus")
    (audio / "corrupt.opus").write_bytes(b"OggS" + np.random.default_rng(0).bytes(700))
    wav[CORRUPT] = str(audio / "corrupt.opus")
    for u in wav:
        text[u] = f"words of {u.lower()}"
    write_dir(r / "data/test", wav, text)
    env = dict(os.environ, PATH=f"{VENV_BIN}:{ROOT / 'utils'}:{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return {"dir": r, "env": env, "wav": wav}


def run(recipe, *args, check=True):
    p = subprocess.run(list(args), cwd=recipe["dir"], env=recipe["env"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def fifo_variant(recipe, src: str, name: str) -> Path:
    """Copy of data dir ``src`` whose last utterance's audio is a FIFO (a read blocks until killed)."""
    r = recipe["dir"]
    dst = r / "data" / name
    shutil.copytree(r / src, dst, ignore=shutil.ignore_patterns("data", "log", "split", ".backup"))
    fifo = r / f"{name}.fifo"
    os.mkfifo(fifo)
    wav = read_table(dst / "wav.scp")
    wav[LAST] = str(fifo)
    (dst / "wav.scp").write_text("".join(f"{u} {v}\n" for u, v in wav.items()))
    return fifo


def run_and_kill(recipe, fifo: Path, module: str, *args):
    """Start a wrapper; when its job 2 opens the FIFO, SIGKILL that job. Returns the finished wrapper."""
    # justkit refuses FIFOs (a read blocks forever) unless pipes are allowed: here the block is the point
    env = {**recipe["env"], "JUSTKIT_ALLOW_PIPES": "1"}
    proc = subprocess.Popen(list(args), cwd=recipe["dir"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    fd, job_pid = None, None
    try:
        deadline = time.monotonic() + TIMEOUT
        while fd is None:
            assert proc.poll() is None, f"wrapper ended before job 2 reached the FIFO: {proc.communicate()}"
            assert time.monotonic() < deadline, "job 2 never opened the FIFO"
            try:  # succeeds only once a reader (job 2) has the FIFO open
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                time.sleep(0.05)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if module.encode() in argv and any(a.endswith(b"split/wav.2.scp") for a in argv) \
                    and cwd == str(recipe["dir"]):
                job_pid = int(pid)
        assert job_pid is not None, "job 2's process not found"
        os.kill(job_pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if fd is not None:
            os.close(fd)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def load_feats(recipe, scp: Path) -> dict:
    """feats.scp entries (paths relative to the recipe dir, as the stage writes them) -> arrays."""
    return {u: kaldiio.load_mat(str(recipe["dir"] / v)) for u, v in read_table(scp).items()}


def visible_files(d: Path):
    return sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def stage2(recipe):
    r = recipe["dir"]
    fifo = fifo_variant(recipe, "data/test", "test_fifo")
    killed = run_and_kill(recipe, fifo, "justkit.bin.resample", "utils/resample_data_dir.sh", "--nj", "2",
                          "--cmd", "utils/run.py", "--fs", "16000", "data/test_fifo", "dump/raw/test")
    dst = r / "dump/raw/test"
    after_kill = {
        "wav.scp": (dst / "wav.scp").exists(),
        "job2_scp": (dst / "split/resample.2.scp").exists(),
        "flacs": visible_files(dst / "data"),
    }
    rerun = run(recipe, "utils/resample_data_dir.sh", "--nj", "2", "--cmd", "utils/run.py", "--fs", "16000",
                "data/test", "dump/raw/test")
    return {"killed": killed, "after_kill": after_kill, "rerun": rerun, "dst": dst}


def test_stage2_killed_job_leaves_nothing_read(recipe, stage2):
    rc, out, err = stage2["killed"]
    assert rc != 0 and "resampling failed" in err and "resample.2.log" in err
    after = stage2["after_kill"]
    assert not after["wav.scp"] and not after["job2_scp"]
    # Every FLAC that exists under its real name is complete (job 1's and job 2's finished ones).
    assert after["flacs"], "job 1 should have finished its files"
    for p in after["flacs"]:
        utt = p.stem
        n_in = sf.info(recipe["wav"][utt]).frames
        assert sf.info(p).frames == -(-n_in // 3)
    assert not any(p.stem == LAST for p in after["flacs"])


def test_stage2_outputs_bad_utts_and_skip_on_rerun(recipe, stage2):
    dst = stage2["dst"]
    wav = read_table(dst / "wav.scp")
    assert sorted(wav) == sorted(GOOD + [SHORT])
    for name in ("text", "utt2spk", "utt2lang", "utt2dur"):
        assert sorted(read_table(dst / name)) == sorted(wav), name
    assert MISSING not in (dst / "spk2utt").read_text() and CORRUPT not in (dst / "spk2utt").read_text()
    bad = {ln.split()[1]: ln for ln in (dst / "bad_utts.txt").read_text().splitlines()}
    assert set(bad) == {MISSING, CORRUPT}
    assert bad[MISSING].startswith(f"test {MISSING} {recipe['wav'][MISSING]} file not found")
    assert bad[CORRUPT].startswith(f"test {CORRUPT} {recipe['wav'][CORRUPT]} unreadable or corrupt audio")
    # The re-run skipped what the killed run had finished.
    logs = (dst / "log/resample.1.log").read_text() + (dst / "log/resample.2.log").read_text()
    skipped = sum(int(w) for w in re.findall(r"(\d+) already done \(skipped\)", logs))
    assert skipped == len(stage2["after_kill"]["flacs"])
    dur = read_table(dst / "utt2dur")
    for u, path in wav.items():
        assert path.startswith("dump/raw/test/data/") and path.endswith(f"/{u}.flac")  # relative, as given
        y, sr = load_audio(recipe["dir"] / path, u)
        x, sr_in = load_audio(recipe["wav"][u], u)
        assert sr == 16000 and sr_in == 48000
        np.testing.assert_allclose(y, np.clip(resample(x, 48000, 16000), -1, 1), atol=1.01 / 32768)
        assert float(dur[u]) == pytest.approx(len(y) / 16000, abs=1e-4)
    assert not list((dst / "data").rglob(".*.tmp"))


@pytest.fixture(scope="module")
def stage3(recipe, stage2):
    r = recipe["dir"]
    cmd = ["utils/make_fbank.sh", "--nj", "2", "--cmd", "utils/run.py", "--config", "conf/fbank.yaml"]
    first = run(recipe, *cmd, "dump/raw/test", "dump/fbank/test")
    dst = r / "dump/fbank/test"
    feats1 = load_feats(recipe, dst / "feats.scp")
    fifo = fifo_variant(recipe, "dump/raw/test", "raw_fifo")
    killed = run_and_kill(recipe, fifo, "justkit.bin.fbank", *cmd, "data/raw_fifo", "dump/fbank/test")
    after_kill = {"files": {p.relative_to(dst).as_posix() for p in visible_files(dst)},
                  "tmp": [p.name for p in (dst / "data").glob(".*.tmp")]}
    rerun = run(recipe, *cmd, "dump/raw/test", "dump/fbank/test")
    return {"first": first, "feats1": feats1, "killed": killed, "after_kill": after_kill, "rerun": rerun,
            "dst": dst}


def test_stage3_outputs(recipe, stage3):
    dst = stage3["dst"]
    feats = load_feats(recipe, dst / "feats.scp")
    good = sorted(GOOD)
    assert sorted(feats) == good
    assert (dst / "feat_dim").read_text().strip() == "80"
    frames = read_table(dst / "utt2num_frames")
    cfg = load_fbank_config(recipe["dir"] / "conf/fbank.yaml")
    raw = read_table(recipe["dir"] / "dump/raw/test/wav.scp")
    for u in good:
        x, sr = load_audio(recipe["dir"] / raw[u], u)
        np.testing.assert_array_equal(feats[u], compute_fbank(x, cfg, sr, u))
        assert int(frames[u]) == feats[u].shape[0]
    for name in ("wav.scp", "text", "utt2spk", "utt2lang", "utt2dur"):
        assert sorted(read_table(dst / name)) == good, name
    assert read_table(dst / "utt2lang")["spkB_0003"] == "en-de"
    bad = (dst / "bad_utts.txt").read_text().splitlines()
    assert len(bad) == 1 and bad[0].startswith(f"test {SHORT} {raw[SHORT]} 200 samples is shorter than one")
    assert all(v.split(":")[0] in ("dump/fbank/test/data/feats.1.ark", "dump/fbank/test/data/feats.2.ark")
               for v in read_table(dst / "feats.scp").values())
    log1 = (dst / "log/fbank.1.log").read_text()
    assert "fbank wav.1.scp: " in log1 and "(done)" in log1


def test_stage3_killed_job_leaves_nothing_read_and_rerun_is_identical(recipe, stage3):
    rc, out, err = stage3["killed"]
    assert rc != 0 and "fbank failed" in err
    files = stage3["after_kill"]["files"]
    # The old index was removed before any shard changed; job 2's shard never got its real name.
    assert "feats.scp" not in files and "utt2num_frames" not in files
    assert "data/feats.2.ark" not in files and "data/feats.2.scp" not in files
    assert any(t.startswith(".feats.2.ark.") for t in stage3["after_kill"]["tmp"])
    dst = stage3["dst"]
    feats = load_feats(recipe, dst / "feats.scp")
    assert sorted(feats) == sorted(stage3["feats1"])
    for u, m in stage3["feats1"].items():
        np.testing.assert_array_equal(feats[u], m)
    assert not list((dst / "data").glob(".*.tmp"))


def test_compute_cmvn_cli(recipe, stage3):
    run(recipe, str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", "dump/fbank/test",
        "dump/fbank/test/cmvn.ark")
    stats = kaldiio.load_mat(str(recipe["dir"] / "dump/fbank/test/cmvn.ark"))
    allf = np.concatenate(list(stage3["feats1"].values())).astype(np.float64)
    assert stats.shape == (2, 81)
    np.testing.assert_allclose(stats[0, :80], allf.sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats[1, :80], (allf ** 2).sum(0), rtol=1e-9)
    assert stats[0, 80] == len(allf)


def test_compute_cmvn_cli_parallel_matches_serial(recipe, stage3):
    run(recipe, str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", "--nj", "3", "dump/fbank/test",
        "dump/fbank/test/cmvn_nj3.ark")
    run(recipe, str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", "dump/fbank/test",
        "dump/fbank/test/cmvn_nj1.ark")
    par, ser = (kaldiio.load_mat(str(recipe["dir"] / f"dump/fbank/test/cmvn_nj{n}.ark")) for n in (3, 1))
    np.testing.assert_allclose(par, ser, rtol=1e-12)
    assert par[0, -1] == ser[0, -1]
    p = run(recipe, str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", "--nj", "0", "dump/fbank/test",
            "dump/fbank/test/x.ark", check=False)
    assert p.returncode == 2 and "--nj must be >= 1" in p.stderr


def test_cmvn_parts_sum_to_the_serial_stats(tmp_path):
    from justkit.frontend.cmvn import CmvnError, compute_cmvn_stats

    rng = np.random.default_rng(0)
    mats = {f"u{i:03d}": (rng.standard_normal((int(rng.integers(1, 40)), 5)) * 3 + 7).astype(np.float32)
            for i in range(37)}
    kaldiio.save_ark(str(tmp_path / "f.ark"), mats, scp=str(tmp_path / "feats.scp"))
    serial = compute_cmvn_stats(tmp_path / "feats.scp")
    allf = np.concatenate(list(mats.values())).astype(np.float64)
    np.testing.assert_allclose(serial[0, :5], allf.sum(0), rtol=1e-12)
    for nj in (2, 5, 37, 100):  # more jobs than utterances: one utterance a part
        par = compute_cmvn_stats(tmp_path / "feats.scp", nj=nj)
        np.testing.assert_allclose(par, serial, rtol=1e-12)
        assert par[0, -1] == serial[0, -1] == len(allf)
    lines = (tmp_path / "feats.scp").read_text().splitlines()
    bad = lines[:30] + [lines[30].split()[0] + " " + str(tmp_path / "f.ark") + ":999999"] + lines[31:]
    (tmp_path / "bad.scp").write_text("\n".join(bad) + "\n")
    with pytest.raises(CmvnError, match=r"bad.scp: utterance u030: cannot read features"):
        compute_cmvn_stats(tmp_path / "bad.scp", nj=4)  # raised in the last part's worker
    kaldiio.save_ark(str(tmp_path / "g.ark"), {"u036": np.zeros((3, 6), np.float32)}, scp=str(tmp_path / "g.scp"))
    (tmp_path / "dim.scp").write_text("\n".join(lines[:36] + (tmp_path / "g.scp").read_text().splitlines()) + "\n")
    with pytest.raises(CmvnError, match=r"dim.scp: utterance u036: dim 6 != 5"):
        compute_cmvn_stats(tmp_path / "dim.scp", nj=37)  # the odd one is a part of its own
    from justkit.datadir.tables import DataDirError

    for name, rows in (("dup.scp", lines[:3] + lines[2:]), ("undup.scp", lines[3:] + lines[:4])):
        (tmp_path / name).write_text("\n".join(rows) + "\n")  # sorted or not, a repeated id is found
        with pytest.raises(DataDirError, match=rf"{name}:\d+: id u00[23]: duplicated"):
            compute_cmvn_stats(tmp_path / name, nj=2)


def test_wrapper_usage_errors(recipe):
    p = run(recipe, "utils/resample_data_dir.sh", "--nj", "2", "data/nope", "dump/raw/nope", check=False)
    assert p.returncode != 0 and "data/nope/wav.scp: file not found" in p.stderr
    p = run(recipe, "utils/make_fbank.sh", "--config", "conf/none.yaml", "data/test", "dump/fbank/x", check=False)
    assert p.returncode != 0 and "conf/none.yaml: fbank config not found" in p.stderr
    p = run(recipe, "utils/make_fbank.sh", "--njobs", "2", "data/test", "dump/fbank/x", check=False)
    assert p.returncode != 0 and "unknown option --njobs" in p.stderr


@pytest.mark.parametrize("storage,max_ratio", [("compressed", 0.3), ("compressed_2byte", 0.55)])
def test_stage3_compressed_storage(recipe, stage3, storage, max_ratio):
    """fbank: storage: compressed* writes Kaldi compressed matrices: a fraction of the bytes, read
    back by kaldiio as float32 within the format's quantisation of each column's range."""
    r = recipe["dir"]
    import yaml

    conf = yaml.safe_load((r / "conf/fbank.yaml").read_text())
    conf["fbank"]["storage"] = storage
    (r / f"conf/fbank_{storage}.yaml").write_text(yaml.safe_dump(conf))
    run(recipe, "utils/make_fbank.sh", "--nj", "2", "--cmd", "utils/run.py", "--config",
        f"conf/fbank_{storage}.yaml", "dump/raw/test", f"dump/fbank/test_{storage}")
    dst = r / f"dump/fbank/test_{storage}"
    got = load_feats(recipe, dst / "feats.scp")
    assert sorted(got) == sorted(stage3["feats1"])
    for u, exact in stage3["feats1"].items():
        assert got[u].dtype == np.float32 and got[u].shape == exact.shape
        col_range = exact.max(0) - exact.min(0)
        step = col_range / (64 if storage == "compressed" else 65535 / 8)  # generous bounds of the formats
        assert (np.abs(got[u] - exact) <= step + 1e-5).all(), u
    size = lambda d: sum(p.stat().st_size for p in (d / "data").glob("feats.*.ark"))  # noqa: E731
    assert size(dst) < max_ratio * size(stage3["dst"])
    assert (dst / "conf/fbank.yaml").read_text().count(f"storage: {storage}") == 1
    # CMVN statistics read the compressed features like any others
    run(recipe, str(VENV_BIN / "python"), "-m", "justkit.bin.compute_cmvn", f"dump/fbank/test_{storage}",
        f"dump/fbank/test_{storage}/cmvn.ark")
    stats = kaldiio.load_mat(str(dst / "cmvn.ark"))
    assert stats[0, 80] == sum(m.shape[0] for m in got.values())


def test_unknown_storage_is_a_config_error():
    from justkit.frontend.fbank import FbankConfig

    with pytest.raises(ValueError, match="storage must be one of"):
        FbankConfig(storage="lilcom")


def test_stage3_raw_frames_and_cmvn_match_stored(recipe, stage3):
    """--feats_type raw stores no features: frame counts from the audio headers equal the stored
    path's, and the CMVN stats of the on-the-fly fbank (nj=2, summed) equal compute_cmvn's over
    the stored float32 features."""
    r = recipe["dir"]
    run(recipe, "utils/make_fbank.sh", "--feats_type", "raw", "--cmvn_fraction", "1", "--nj", "2", "--cmd",
        "utils/run.py", "--config", "conf/fbank.yaml", "dump/raw/test", "dump/onthefly/test")
    dst = r / "dump/onthefly/test"
    assert not (dst / "feats.scp").exists() and not list(dst.rglob("*.ark.*")) and not (dst / "data").exists()
    assert (dst / "feat_dim").read_text().strip() == "80"
    assert (dst / "conf/fbank.yaml").is_file()
    stored = read_table(stage3["dst"] / "utt2num_frames")
    assert read_table(dst / "utt2num_frames") == stored
    assert sorted(read_table(dst / "wav.scp")) == sorted(GOOD)
    bad = (dst / "bad_utts.txt").read_text().splitlines()
    assert len(bad) == 1 and bad[0].split()[1] == SHORT and "shorter than one 25 ms frame" in bad[0]
    stats = kaldiio.load_mat(str(dst / "cmvn.ark"))
    allf = np.concatenate([stage3["feats1"][u] for u in sorted(stage3["feats1"])]).astype(np.float64)
    assert stats.shape == (2, 81) and stats[0, 80] == len(allf)
    np.testing.assert_allclose(stats[0, :80], allf.sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats[1, :80], (allf ** 2).sum(0), rtol=1e-9)

    # a seeded share: the same sample whatever --nj, stats over exactly the sampled utterances
    from justkit.frontend.shards import in_cmvn_sample

    for nj in ("1", "2"):
        run(recipe, "utils/make_fbank.sh", "--feats_type", "raw", "--cmvn_fraction", "0.5", "--cmvn_seed", "3",
            "--nj", nj, "--cmd", "utils/run.py", "--config", "conf/fbank.yaml", "dump/raw/test",
            f"dump/onthefly/test_half{nj}")
    s1, s2 = (kaldiio.load_mat(str(r / f"dump/onthefly/test_half{nj}/cmvn.ark")) for nj in "12")
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    picked = [u for u in stage3["feats1"] if in_cmvn_sample(u, 0.5, 3)]
    assert 0 < len(picked) < len(stage3["feats1"])
    assert s1[0, 80] == sum(stage3["feats1"][u].shape[0] for u in picked)


def test_stage3_raw_from_48k_opus_and_bad_audio(recipe, stage3):
    """Stage 3 raw straight on stage 1's 48 kHz opus (the loader resamples on the fly): the frame
    counts follow the resampling length rule; missing/corrupt/too short audio is listed and dropped;
    a 0 share writes no CMVN stats; a bad --feats_type or --cmvn_fraction is refused."""
    r = recipe["dir"]
    run(recipe, "utils/make_fbank.sh", "--feats_type", "raw", "--nj", "2", "--cmd", "utils/run.py",
        "--config", "conf/fbank.yaml", "data/test", "dump/onthefly/test48")
    dst = r / "dump/onthefly/test48"
    assert read_table(dst / "utt2num_frames") == read_table(stage3["dst"] / "utt2num_frames")
    assert not (dst / "cmvn.ark").exists()
    bad = {ln.split()[1]: ln for ln in (dst / "bad_utts.txt").read_text().splitlines()}
    assert set(bad) == {MISSING, CORRUPT, SHORT}
    assert "file not found" in bad[MISSING] and "unreadable or corrupt audio" in bad[CORRUPT]
    p = run(recipe, "utils/make_fbank.sh", "--feats_type", "mfcc", "data/test", "dump/onthefly/x", check=False)
    assert p.returncode != 0 and "--feats_type must be fbank or raw" in p.stderr
    p = run(recipe, "utils/make_fbank.sh", "--feats_type", "raw", "--cmvn_fraction", "2", "data/test",
            "dump/onthefly/x", check=False)
    assert p.returncode != 0 and "--cmvn_fraction must be a number in [0, 1]" in p.stderr


# ---------------------------------------------------------------- durability: one sync per group, not one fsync per file


def test_atomic_open_fsyncs_unless_told_not_to(tmp_path, monkeypatch):
    import justkit.fileio as fileio

    calls = []
    real = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    with fileio.atomic_open(tmp_path / "a") as f:
        f.write("x")
    assert len(calls) == 1
    with fileio.atomic_open(tmp_path / "b", fsync=False) as f:
        f.write("y")
    assert len(calls) == 1 and (tmp_path / "b").read_text() == "y"
    assert not list(tmp_path.glob(".*.tmp"))


def test_resample_shard_syncs_per_group_and_renames_after_the_sync(recipe, tmp_path, monkeypatch):
    """No fsync per FLAC; each group of files is renamed into place only after a filesystem
    sync (then the renames are synced), so a file under its final name, the one a re-run's
    is_complete trusts, always has its data on disk; a failing job leaves only committed files."""
    import justkit.fileio as fileio
    from justkit.frontend.shards import resample_shard

    events = []
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: events.append("fsync"))
    monkeypatch.setattr(fileio, "sync_filesystem", lambda d: events.append("sync"))
    real_replace = os.replace
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (events.append(("rename", Path(b).name)), real_replace(a, b))[1])
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{u} {recipe['wav'][u]}\n" for u in GOOD))  # 6 good utterances
    wav, dur, bad = resample_shard(scp, str(tmp_path / "out"), 16000, commit_every=4)
    assert sorted(wav) == sorted(GOOD) and not bad
    assert "fsync" not in events
    assert [e if e == "sync" else "rename" for e in events] == ["sync"] + ["rename"] * 4 + ["sync"] * 2 + ["rename"] * 2 + ["sync"]
    for u, p in wav.items():
        assert sf.info(p).frames == -(-sf.info(recipe["wav"][u]).frames // 3)
    # A job that fails half-way: the committed group stays, the staged files are removed.
    events.clear()
    import justkit.frontend.shards as shards

    n = {"calls": 0}
    real_write = shards.write_flac

    def failing(f, *a, **k):
        n["calls"] += 1
        if n["calls"] == 3:
            raise OSError(28, "No space left on device")
        return real_write(f, *a, **k)

    monkeypatch.setattr(shards, "write_flac", failing)
    with pytest.raises(RuntimeError, match=rf"wav.scp: utterance {GOOD[2]}: resampling .* No space left"):
        resample_shard(scp, str(tmp_path / "out2"), 16000, commit_every=2)
    out2 = tmp_path / "out2"
    assert sorted(p.stem for p in out2.rglob("*.flac") if not p.name.startswith(".")) == sorted(GOOD[:2])
    assert not list(out2.rglob(".*.tmp"))
