"""The fault suite: hostile or unlucky input, each refused with a clear error or recovered from,
with nothing already produced lost (docs/trust.md). Cases covered elsewhere are listed at the end."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
CORPUS = ROOT / "tools/mini_mls/corpus"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "JUSTKIT_NO_INSTALL": "1",
       "PATH": f"{Path(PY).parent}:{os.environ.get('PATH', '')}"}  # `python` in job commands: this one
ENV.pop("JUSTKIT_ALLOW_PIPES", None)


# ----------------------------------------------------------------------------- 1. poisoned models

def test_nonfinite_model_is_refused_at_save_and_at_decode(tmp_path, tiny_model_config):
    from justkit.data.dataset import PackedDataset
    from justkit.decode.beam import BeamConfig, graves_beam_search
    from justkit.decode.decoder import DecodeConfig, NonFiniteModel, decode_dataset
    from justkit.models.just import JUSTConfig, JUSTModel

    d = tiny_model_config("supervised", vocab_size=8)
    model = JUSTModel(JUSTConfig.from_dict(d)).eval()
    with torch.no_grad():
        model.contrastive_blocks.blocks[0].conv.norm.running_var.fill_(float("nan"))
    import kaldiio

    kaldiio.save_ark(str(tmp_path / "f.ark"), {"u1": np.random.default_rng(0).standard_normal((60, 80)).astype(np.float32)},
                     scp=str(tmp_path / "f.scp"))
    rx = (tmp_path / "f.scp").read_text().split()[1]
    ds = PackedDataset([{"utt": "u1", "feats": rx, "num_frames": 60, "tokens": [1], "lang": "en",
                         "labelled": True, "text": "a"}])
    t0 = time.time()
    with pytest.raises(NonFiniteModel, match="u1: the encoder output is NaN"):
        decode_dataset(model, ds, DecodeConfig(), progress=False)
    # a beam search fed NaN scores stops instead of searching forever
    enc = torch.full((1, 20, 32), float("nan"))
    graves_beam_search(model, enc, torch.tensor([20]), BeamConfig(beam_size=4))
    assert time.time() - t0 < 30
    # the trainer refuses to save a model with non-finite values over the last good checkpoint
    from justkit.train.asr import ASRTask
    from justkit.train.trainer import Trainer

    (tmp_path / "p.jsonl").write_text(json.dumps(ds.entries[0]) + "\n")
    cfg = {"model": d, "data": {"max_frames": 300}, "train": {"max_steps": 1, "plots": False, "tensorboard": False},
           "paths": {"train": str(tmp_path / "p.jsonl")}}
    t = Trainer(ASRTask(cfg), tmp_path / "exp")
    t.model.load_state_dict(model.state_dict())
    t.step = 1
    with pytest.raises(RuntimeError, match="non-finite values in contrastive_blocks.blocks.0.conv.norm.running_var"):
        t._save()
    assert not (tmp_path / "exp/checkpoints").exists() or not list((tmp_path / "exp/checkpoints").iterdir())


# ----------------------------------------------------------------------------- 2. archives

def _tar(path: Path, members: list) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = b"x"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("sym", "hard"):
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = target
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)


@pytest.mark.parametrize("kind,target", [("sym", "../../outside"), ("sym", "x"), ("hard", "mls_x/a"), ("fifo", "")])
def test_archive_links_and_devices_are_refused(tmp_path, kind, target):
    from justkit.corpora.download import RefusedMember, extract_tar

    arc = tmp_path / "mls_x.tar.gz"
    _tar(arc, [("mls_x", "dir", ""), ("mls_x/a", "file", ""), ("mls_x/l", kind, target)])
    with pytest.raises(RefusedMember, match="mls_x/l"):
        extract_tar(arc, tmp_path / "root", "mls_x")
    assert not (tmp_path / "root/mls_x").exists() and not (tmp_path / "outside").exists()
    assert not list((tmp_path / "root").glob(".*extracting"))


def test_download_without_a_published_md5_is_an_error_unless_opted_out(tmp_path, monkeypatch):
    from justkit.corpora import mls
    from justkit.corpora.download import DownloadError

    monkeypatch.setattr(mls, "fetch_text", lambda url, timeout_s=30.0: (_ for _ in ()).throw(DownloadError(f"{url}: 404")))
    with pytest.raises(DownloadError, match="cannot verify the download"):
        mls.official_md5("mls_polish_opus.tar.gz", "http://127.0.0.1:9")
    assert mls.official_md5("mls_polish_opus.tar.gz", "http://127.0.0.1:9", required=False) is None


# ----------------------------------------------------------------------------- 3. commands in data files

def test_commands_in_data_files_and_options_are_refused(tmp_path):
    from justkit.data.dataset import PackedDataError, PackedDataset
    from justkit.datadir.validate import validate_data_dir
    from justkit.fileio import PipeRefused
    from justkit.frontend.cmvn import compute_cmvn_stats, read_cmvn

    flag = tmp_path / "ran"
    cmd = f"touch {flag} |"
    (tmp_path / "feats.scp").write_text(f"u1 {cmd}\n")
    with pytest.raises(PipeRefused, match="feats.scp: utterance u1: 'touch .*' is a shell command"):
        compute_cmvn_stats(tmp_path / "feats.scp")
    with pytest.raises(PipeRefused, match="CMVN stats"):
        read_cmvn(cmd)
    ds = PackedDataset([{"utt": "u1", "feats": cmd, "num_frames": 3, "tokens": [], "lang": "en",
                         "labelled": False, "text": ""}])
    with pytest.raises((PipeRefused, PackedDataError), match="shell command"):
        ds.load_feats(0)
    d = tmp_path / "d"
    d.mkdir()
    for name, value in (("wav.scp", cmd), ("text", "a b"), ("utt2spk", "s1"), ("utt2lang", "en")):
        (d / name).write_text(f"s1-u1 {value}\n")
    (d / "spk2utt").write_text("s1 s1-u1\n")
    probs = validate_data_dir(d, check_audio=True)
    assert any("a shell command, not an audio file" in p for p in probs)
    assert not flag.exists()


# ----------------------------------------------------------------------------- 4. shell injection

def _recipe(tmp_path: Path) -> Path:
    import shutil

    for name in ("mls", "TEMPLATE"):
        shutil.copytree(ROOT / "egs" / name, tmp_path / "egs" / name, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp*", "results"))
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    return tmp_path / "egs/mls"


@pytest.mark.parametrize("opts", [["--tag", "x;touch PWNED;"], ["--config", "conf/a;touch PWNED;.yaml"],
                                  ["--init", "x;touch PWNED;"], ["--tag", "a b"], ["--langs", "en;touch PWNED"]])
def test_tags_and_paths_with_shell_characters_are_refused(tmp_path, opts):
    egs = _recipe(tmp_path)
    r = subprocess.run(["bash", "run.sh", "--stage", "6", "--stop_stage", "6", *opts], cwd=egs, env=ENV,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "may use only" in r.stderr or "shell characters" in r.stderr or "not a language code" in r.stderr
    assert not list(egs.rglob("PWNED")) and not (egs / "exp").exists()


def test_job_commands_quote_paths(tmp_path):
    """A data dir whose name holds shell characters is data in the job's command line."""
    src = tmp_path / "src"
    src.mkdir()
    import soundfile as sf

    sf.write(src / "a.wav", np.zeros(16000, np.float32), 16000)
    for name, value in (("wav.scp", str(src / "a.wav")), ("text", "a"), ("utt2spk", "s"), ("utt2lang", "en")):
        (src / name).write_text(f"s-a {value}\n")
    (src / "spk2utt").write_text("s s-a\n")
    dst = tmp_path / "o$(touch${IFS}PWNED)x"  # no space: paths with spaces are refused anyway
    r = subprocess.run(["bash", str(ROOT / "utils/resample_data_dir.sh"), "--nj", "1", str(src), str(dst)],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "PWNED").exists() and (dst / "wav.scp").is_file()


# ----------------------------------------------------------------------------- 5. jobs, locks, logs

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_jobs_end_with_their_runner(tmp_path, sig):
    script = tmp_path / "job.sh"
    script.write_text("echo $$ > pid.$1; exec sleep 60\n")
    p = subprocess.Popen([PY, str(ROOT / "utils/run.py"), "JOB=1:2", "log/j.JOB.log", "bash", str(script), "JOB"],
                         cwd=tmp_path, env=ENV, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline and not all((tmp_path / f"pid.{j}").is_file() for j in (1, 2)):
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(p.pid, sig)
    p.wait(timeout=30)
    time.sleep(2)
    pids = [int((tmp_path / f"pid.{j}").read_text()) for j in (1, 2)]
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    for pid in alive:  # do not leak them whatever happens
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"jobs outlived a runner killed by {sig.name}"


def test_a_second_training_of_the_same_experiment_is_refused(tmp_path, capfd, make_packed, tiny_words):
    """A valid second training of an experiment another one holds is refused naming the holder
    (the config is resolved first: a bad one is its own error, and writes nothing)."""
    from justkit.bin.train import main
    from justkit.fileio import lock_dir
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    items = [(f"t{i}", w) for i, w in enumerate(tiny_words)] + [("t99", " ".join(tiny_words))]
    tok = train_tokenizer({"en": items}, tmp_path / "token",
                          TokenizerConfig(vocab_size=14, hard_vocab_limit=False, lang_alpha=1.0))
    packed = make_packed(tmp_path / "data", tokenizer=tok)
    exp = tmp_path / "exp"
    held = lock_dir(exp, "test")  # noqa: F841 (another "training" holds it)
    (tmp_path / "c.yaml").write_text("include: [" + str(ROOT / "egs/TEMPLATE/conf/model/tiny.yaml") + "]\ntrain: {max_steps: 1}\n")
    rc = main(["--config", str(tmp_path / "c.yaml"), "--exp", str(exp), "--train_data", str(packed),
               "--tokenizer", str(tmp_path / "token" / "spm.model")])
    err = capfd.readouterr().err
    assert rc == 2 and "already running (pid" in err, err
    assert not (exp / "config.yaml").exists()


def test_logs_are_rotated_not_truncated(tmp_path):
    for word in ("first", "second"):
        r = subprocess.run([PY, str(ROOT / "utils/run.py"), "log/x.log", "echo", word], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert "second" in (tmp_path / "log/x.log").read_text() and "first" in (tmp_path / "log/x.log.1").read_text()


# ----------------------------------------------------------------------------- 6. truncated audio

def test_truncated_opus_is_refused(tmp_path):
    from justkit.frontend.audio import AudioError, audio_info, load_audio

    src = sorted(CORPUS.glob("mls_polish_opus/train/audio/*/*/*.opus"))[0]
    data = src.read_bytes()
    load_audio(src)
    audio_info(src)
    for frac in (0.2, 0.5, 0.8, 0.95, 0.99):
        cut = tmp_path / f"cut{frac}.opus"
        cut.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(AudioError, match="truncated"):
            load_audio(cut, "u1")
        with pytest.raises(AudioError, match="truncated"):
            audio_info(cut, "u1")


# ----------------------------------------------------------------------------- 8. file modes

def test_output_files_follow_the_umask(tmp_path):
    from justkit.fileio import atomic_write_text

    atomic_write_text(tmp_path / "x.txt", "x")
    mode = (tmp_path / "x.txt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ----------------------------------------------------------------------------- 9. configs and small things

def test_config_values_are_type_checked(tmp_path):
    from justkit.config import ConfigError, from_dict, load_yaml
    from justkit.train.config import TrainConfig

    with pytest.raises(ConfigError, match="train.plots: expected true or false, got 'maybe'"):
        from_dict(TrainConfig, {"max_steps": 1, "plots": "maybe"}, "train")
    with pytest.raises(ConfigError, match="train.optim: expected a mapping"):
        from_dict(TrainConfig, {"max_steps": 1, "optim": 3}, "train")
    with pytest.raises(ConfigError, match="train.init: expected a string"):
        from_dict(TrainConfig, {"max_steps": 1, "init": 5}, "train")
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_yaml(tmp_path / "a.yaml")
    # a key given twice is an error naming both lines, not a silent "last one wins"
    (tmp_path / "dup.yaml").write_text("fbank:\n  storage: compressed\n  dither: 0.0\n  storage: float32\n")
    with pytest.raises(ConfigError, match=r"key 'storage' given twice \(line 2 and line 4\)"):
        load_yaml(tmp_path / "dup.yaml")
    (tmp_path / "ok.yaml").write_text("fbank: {storage: compressed}\nother: {storage: float32}\n")
    assert load_yaml(tmp_path / "ok.yaml")["fbank"]["storage"] == "compressed"


def test_average_num_zero_is_an_error(tmp_path, capfd):
    from justkit.bin.average import main

    (tmp_path / "exp/checkpoints").mkdir(parents=True)
    assert main(["--exp", str(tmp_path / "exp"), "--out", str(tmp_path / "a.pt"), "--num", "0"]) == 2
    assert "--num must be >= 1" in capfd.readouterr().err


def test_punctuation_only_transcript_is_a_bad_utterance_in_stage_1(tmp_path):
    import shutil

    from justkit.corpora.prepare_mls import PrepareConfig, prepare

    root = tmp_path / "mls"
    shutil.copytree(CORPUS / "mls_polish_opus", root / "mls_polish_opus")
    t = root / "mls_polish_opus/train/transcripts.txt"
    lines = t.read_text(encoding="utf-8").splitlines()
    victim = lines[3].split("\t")[0]
    lines[3] = f"{victim}\t?! …"
    t.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(PrepareConfig(mls_root=str(root), out=str(tmp_path / "data"), langs=["pl"]))
    bad = (tmp_path / "data/bad_utts.txt").read_text(encoding="utf-8")
    assert victim.split("_")[-1] in bad and "no word left after normalisation" in bad


# ----------------------------------------------------------------------------- probe cases that pass

def test_full_disk_during_a_checkpoint_save_keeps_the_last_good_one(tmp_path):
    """A file-size limit stands in for a full disk: the save fails, the older checkpoint stays
    whole and no half-written file is left behind."""
    code = f"""
import resource, signal, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from justkit.train.checkpoint import save_checkpoint
save_checkpoint({{"model": {{"w": torch.zeros(10)}}, "step": 1, "epoch": 0, "config": {{}}}}, {str(tmp_path)!r}, 1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))
try:
    save_checkpoint({{"model": {{"w": torch.zeros(1000000)}}, "step": 2, "epoch": 0, "config": {{}}}}, {str(tmp_path)!r}, 2)
except (OSError, RuntimeError) as e:  # torch's zip writer may report the short write as either
    print("failed as expected:", type(e).__name__, e)
"""
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert "failed as expected" in r.stdout, r.stdout + r.stderr
    # a one-line user error (exit status 2 from a command), naming the file and what is intact
    assert "failed as expected: CheckpointWriteError" in r.stdout and "ckpt-1.pt intact" in r.stdout, r.stdout
    from justkit.train.checkpoint import list_checkpoints, load_checkpoint

    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-1.pt"]
    assert load_checkpoint(tmp_path / "ckpt-1.pt")["step"] == 1
    assert not list(tmp_path.glob(".ckpt-*"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_checkpoint_is_not_executed(tmp_path, monkeypatch):
    from justkit.models.factory import CheckpointError, load_checkpoint

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": _Evil()}, bad, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(bad)
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------- 10. second round (issue 21)
# High 1: unreadable checkpoints

def _ckpts(d: Path, steps=(1, 2, 3)) -> list:
    from justkit.train.checkpoint import save_checkpoint

    state = {"model": {"w": torch.zeros(1000)}, "config": {}, "optimizer": {}, "scheduler": {}, "sampler": {},
             "rng": [], "step": 0, "epoch": 0}
    return [save_checkpoint({**state, "step": s}, d, s) for s in steps]


def test_truncated_checkpoints_stop_training_and_are_not_deleted(tmp_path):
    from justkit.train.checkpoint import CheckpointsUnreadable, load_latest_checkpoint, save_checkpoint

    paths = _ckpts(tmp_path)
    for p in paths:
        p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(CheckpointsUnreadable, match="ckpt-3.pt: truncated or corrupt.*ckpt-1.pt.*--train.restart true"):
        load_latest_checkpoint(tmp_path)
    assert all(p.stat().st_size == 300 for p in paths)  # nothing deleted or moved
    # an explicit restart starts over and keeps the unreadable files aside, where keep_last never looks
    assert load_latest_checkpoint(tmp_path, restart=True) is None
    assert sorted(p.name for p in (tmp_path / "unreadable").iterdir()) == ["ckpt-1.pt", "ckpt-2.pt", "ckpt-3.pt"]
    for s in (4, 5, 6):
        save_checkpoint({"model": {}, "config": {}, "step": s}, tmp_path, s, keep_last=1)
    assert len(list((tmp_path / "unreadable").iterdir())) == 3


def test_a_corrupt_newest_checkpoint_falls_back_to_an_older_good_one(tmp_path):
    from justkit.train.checkpoint import load_latest_checkpoint

    paths = _ckpts(tmp_path)
    paths[-1].write_bytes(paths[-1].read_bytes()[:-100])
    state, path = load_latest_checkpoint(tmp_path)
    assert path == paths[1] and state["step"] == 2
    assert (tmp_path / "unreadable/ckpt-3.pt").is_file() and not paths[-1].exists()


def test_an_io_error_on_a_checkpoint_is_not_taken_for_corruption(tmp_path, monkeypatch):
    import errno

    from justkit.train.checkpoint import CheckpointsUnreadable, load_latest_checkpoint

    paths = _ckpts(tmp_path)
    real = torch.load

    def flaky(f, *a, **k):
        if str(f).endswith("ckpt-3.pt"):
            raise OSError(errno.ESTALE, "Stale file handle")
        return real(f, *a, **k)

    monkeypatch.setattr(torch, "load", flaky)
    with pytest.raises(CheckpointsUnreadable, match="ckpt-3.pt: cannot resume from it.*Stale file handle"):
        load_latest_checkpoint(tmp_path)
    assert all(p.is_file() for p in paths) and not (tmp_path / "unreadable").exists()


def test_stale_temporary_checkpoint_files_are_removed_on_start(tmp_path):
    from justkit.train.checkpoint import load_latest_checkpoint

    _ckpts(tmp_path, (1,))
    stale = tmp_path / ".ckpt-2.pt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    state, _ = load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and not stale.exists()


# High 6: outputs that are devices, links, inputs; Low: .lock links, unwritable outputs

def test_atomic_writes_keep_fifos_links_and_modes(tmp_path):
    import threading

    from justkit.fileio import OutputError, atomic_write_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    atomic_write_text(fifo, "through the pipe\n")
    reader.join(10)
    assert got == ["through the pipe\n"] and fifo.is_fifo()
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    private = tmp_path / "private.txt"
    private.write_text("old")
    private.chmod(0o600)
    atomic_write_text(private, "new")
    assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    # /dev/stdout redirected to a file: written through the descriptor, the file is not replaced
    out = tmp_path / "stdout.txt"
    with open(out, "w") as f:
        f.write("before\n")
        f.flush()
        ino = os.fstat(f.fileno()).st_ino
        subprocess.run([PY, "-c", "from justkit.fileio import atomic_write_text; atomic_write_text('/dev/stdout', 'hyp\\n')"],
                       stdout=f, env=ENV, check=True, timeout=60)
    assert out.read_text() == "before\nhyp\n" and out.stat().st_ino == ino


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path):
    from justkit.fileio import Locked, lock_dir

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp/.lock").symlink_to(victim)
    with pytest.raises(Locked, match="symbolic link"):
        lock_dir(tmp_path / "exp", "training")
    assert victim.read_text() == "precious\n"


@pytest.fixture(scope="module")
def packed(experiment, tmp_path_factory):
    from justkit.models.package import pack_model

    return pack_model(experiment["exp"], tmp_path_factory.mktemp("packed") / "model")


def _wav(path: Path, seconds: float, signal, seed: int = 0) -> Path:
    import soundfile as sf

    sf.write(path, signal(seed, seconds), 16000, subtype="PCM_16")
    return path


def test_transcribe_refuses_an_output_that_is_an_input_before_decoding(experiment, tmp_path, capfd, monkeypatch, speech_signal):
    from justkit.bin.transcribe import main
    from justkit.decode import transcribe

    monkeypatch.setattr(transcribe.Speech2Text, "from_dir", classmethod(lambda *a, **k: pytest.fail("decoded")))
    x = _wav(tmp_path / "x.wav", 1.0, speech_signal)
    before = x.read_bytes()
    assert main(["--model_dir", str(experiment["exp"]), str(x), "--out", str(x)]) == 2
    assert "is also an input" in capfd.readouterr().err and x.read_bytes() == before
    scp = tmp_path / "s"
    scp.write_text(f"a {x}\n")
    (tmp_path / "alias").symlink_to(scp)
    assert main(["--model_dir", str(experiment["exp"]), "--wav_scp", str(scp), "--out", str(tmp_path / "alias")]) == 2
    assert "--wav_scp" in capfd.readouterr().err and scp.read_text() == f"a {x}\n"
    # an output that cannot be written fails now, not after decoding everything
    (tmp_path / "afile").write_text("")
    assert main(["--model_dir", str(experiment["exp"]), str(x), "--out", str(tmp_path / "afile/hyp.txt")]) == 2
    assert "is not a directory" in capfd.readouterr().err
    assert main(["--model_dir", str(experiment["exp"]), str(x), "--ctm", str(tmp_path)]) == 2
    assert "is a directory" in capfd.readouterr().err


def test_transcribe_names_a_too_short_file_and_transcribes_the_others(experiment, tmp_path, capfd, speech_signal):
    from justkit.bin.transcribe import main
    from justkit.datadir.tables import read_table

    good = _wav(tmp_path / "good.wav", 1.5, speech_signal)
    tiny = _wav(tmp_path / "tiny.wav", 0.02, speech_signal)    # under one 25 ms frame: no features at all
    short = _wav(tmp_path / "short.wav", 0.06, speech_signal)  # 4 frames: fewer than the subsampling needs
    out = tmp_path / "hyp.txt"
    rc = main(["--model_dir", str(experiment["exp"]), str(tiny), str(short), str(good), "--out", str(out)])
    err = capfd.readouterr().err
    assert rc == 2 and "tiny.wav" in err and "shorter than one 25 ms frame" in err
    assert "short: 4 frames" in err and "empty hypothesis" in err
    hyp = read_table(out, allow_empty_value=True)
    assert sorted(hyp) == ["good", "short"] and hyp["short"] == ""


def test_long_audio_is_decoded_in_bounded_pieces(experiment, tmp_path, speech_signal):
    from justkit.decode.transcribe import Speech2Text

    s2t = Speech2Text.from_dir(experiment["exp"], max_segment_s=4.0, batch_size=2)
    x = np.concatenate([speech_signal(k, 2.5) if k % 2 == 0 else np.zeros(8000, np.float32) for k in range(9)])  # 14.5 s
    seen = []
    enc = s2t.model.encode
    s2t.model.encode = lambda f, lens: (seen.append(tuple(f.shape)), enc(f, lens))[1]
    feats = s2t.features(x, 16000)
    pieces = s2t.segments(feats)
    assert len(pieces) >= 4 and pieces[0][0] == 0 and pieces[-1][1] == feats.shape[0]
    assert all(b == c for (_, b), (c, _) in zip(pieces, pieces[1:])) and all(e - s <= 400 for s, e in pieces)
    r = s2t.transcribe([(x, 16000)])[0]
    assert max(t for _, t, _ in seen) <= 400 and max(b for b, _, _ in seen) <= 2
    assert r.times == sorted(r.times) and (not r.times or r.times[-1] <= 14.5)
    # word timings of the pieces, shifted to their place: in order, never overlapping, within the file
    assert len(r.spans) == len(r.pieces) and r.timing == "transducer"
    bad = [(a, b) for a, b in zip(r.spans, r.spans[1:]) if not (a.end <= b.start + 1e-6 and a.end > a.start)]
    assert not bad, (bad[:3], s2t.segments(feats))
    assert " ".join(w.text for w in r.words) == " ".join(r.text.split()) and r.words[-1].end <= 14.5
    assert r.spans[-1].start > 4.0   # later pieces are not left at their piece-local times
    whole = Speech2Text.from_dir(experiment["exp"], max_segment_s=0)
    assert whole.segments(feats) == [(0, feats.shape[0])]


@pytest.mark.parametrize("opts,msg", [(["--beam_size", "512"], "beam_size must be in \\[1, 64\\]"),
                                      (["--beam_size", "0"], "beam_size must be in"),
                                      (["--device", "cuda:7"], "--device cuda:7")])
def test_transcribe_options_out_of_range_are_one_line_errors(experiment, tmp_path, capfd, opts, msg, speech_signal):
    from justkit.bin.transcribe import main

    if opts[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    x = _wav(tmp_path / "x.wav", 1.0, speech_signal)
    assert main(["--model_dir", str(experiment["exp"]), str(x), "--method", "beam", *opts]) == 2
    err = capfd.readouterr().err
    assert re.search(msg, err) and "Traceback" not in err


@pytest.mark.parametrize("opts,msg", [(["--decode.beam.beam_size", "0"], "beam_size must be in"),
                                      (["--decode.beam.beam_size", "100000"], "beam_size must be in"),
                                      (["--device", "cuda:7"], "--device cuda:7")])
def test_decode_options_out_of_range_are_one_line_errors(experiment, train_set, tmp_path, capfd, opts, msg):
    from justkit.bin.decode import main

    if opts[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    rc = main(["--exp", str(experiment["exp"]), "--tokenizer", str(experiment["dir"] / "token/spm.model"),
               *opts, train_set[3]])
    err = capfd.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err


# Medium/Low: a packed model dir whose parts do not fit together

def _copy_pack(packed, tmp_path) -> Path:
    import shutil

    d = tmp_path / "m"
    shutil.copytree(packed, d, symlinks=True)
    return d


@pytest.mark.parametrize("damage,msg", [
    ("no_cmvn", "cmvn.ark: missing, but .*config.yaml says the model was trained with CMVN"),
    ("cmvn_link", "cmvn.ark: a symbolic link"),
    ("d_model", "weights do not fit the model .*config.yaml describes"),
    ("empty_config", "config.yaml: empty, or without a model: section"),
    ("mel40", "num_mel_bins 40 but the model takes 80-dim features"),
    ("rate8k", "sample_frequency 8000 but the model was trained with 16000"),
])
def test_a_model_dir_whose_parts_do_not_fit_is_refused(packed, tmp_path, damage, msg):
    import yaml

    from justkit.decode.transcribe import Speech2Text
    from justkit.errors import JustkitError

    d = _copy_pack(packed, tmp_path)
    if damage == "no_cmvn":
        (d / "cmvn.ark").unlink()
    elif damage == "cmvn_link":
        (d / "cmvn.ark").rename(tmp_path / "elsewhere.ark")
        (d / "cmvn.ark").symlink_to(tmp_path / "nowhere.ark")
    elif damage == "d_model":
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["model"]["d_model"] = 2 * cfg["model"]["d_model"]
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    elif damage == "empty_config":
        (d / "config.yaml").write_text("")
    else:
        fb = yaml.safe_load((d / "fbank.yaml").read_text())
        fb["fbank"].update(num_mel_bins=40) if damage == "mel40" else fb["fbank"].update(sample_frequency=8000)
        (d / "fbank.yaml").write_text(yaml.safe_dump(fb))
    with pytest.raises(JustkitError, match=msg):
        Speech2Text.from_dir(d)


def test_a_cmvn_of_another_dimension_is_refused(packed, tmp_path):
    from justkit.decode.transcribe import Speech2Text
    from justkit.frontend.cmvn import accumulate, write_cmvn
    from justkit.models.package import ModelDirError

    d = _copy_pack(packed, tmp_path)
    write_cmvn(d / "cmvn.ark", accumulate([np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32)]))
    with pytest.raises(ModelDirError, match="CMVN statistics of dim 40, the model takes 80"):
        Speech2Text.from_dir(d)


def test_packing_over_an_old_model_dir_removes_its_onnx_export(experiment, packed, tmp_path):
    from justkit.models.package import pack_model

    d = _copy_pack(packed, tmp_path)
    (d / "onnx").mkdir()
    (d / "onnx/tokens.txt").write_text("<blk> 0\nother 1\n")
    pack_model(experiment["exp"], d)
    assert not (d / "onnx").exists() and (d / "model.pt").is_file()


# High 4-5: audio whose header or rate would take unbounded memory; Medium: FIFOs and devices

def test_odd_sample_rates_resample_with_a_bounded_kernel(tmp_path):
    import soundfile as sf

    from justkit.frontend.resample import get_resampler, output_length, reduced_rates, resample
    from justkit.frontend.shards import fly_samples
    from justkit.frontend.fbank import FbankConfig

    for sr in (44101, 47999, 7919, 176089, 192001):
        o, n = reduced_rates(sr, 16000)
        assert max(o, n) <= 1000 and abs((n / o) / (16000 / sr) - 1) < 6e-4
        assert get_resampler(sr, 16000).kernel.numel() < 2_000_000  # < 8 MB (the exact kernel: 5.7 GB)
    assert reduced_rates(44100, 16000) == (441, 160) and reduced_rates(48000, 16000) == (3, 1)  # exact as before
    t = np.arange(44101 * 2) / 44101
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    sf.write(tmp_path / "odd.wav", x, 44101)
    y = fly_samples(str(tmp_path / "odd.wav"), "u1", FbankConfig())
    assert len(y) == output_length(len(x), 44101, 16000)
    ref = np.sin(2 * np.pi * 440 * np.arange(len(y)) / 16000)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 0.02  # the same tone, not just the length
    assert np.array_equal(resample(x[:1000], 44100, 16000), resample(x[:1000], 44100, 16000))


def _flac_claiming(path: Path, total: int) -> Path:
    import soundfile as sf

    sf.write(path, np.zeros(16000, np.float32), 16000)
    b = bytearray(path.read_bytes())
    i = 8 + 13  # STREAMINFO: the total sample count is the last 36 bits of bytes 13-17
    b[i] = (b[i] & 0xF0) | ((total >> 32) & 0x0F)
    b[i + 1 : i + 5] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(b))
    return path


def test_an_audio_header_claiming_huge_lengths_is_refused_before_reading(tmp_path):
    from justkit.frontend.audio import AudioError, audio_info, load_audio

    big = _flac_claiming(tmp_path / "big.flac", 2**36 - 1)
    with pytest.raises(AudioError, match="big.flac: utterance u1: its header claims 68719476735 frames"):
        load_audio(big, "u1")
    with pytest.raises(AudioError, match="its header claims"):
        audio_info(big, "u1")
    lie = _flac_claiming(tmp_path / "lie.flac", 2**28)  # under the cap, but not in a few KB
    with pytest.raises(AudioError, match="impossible in .* bytes"):
        load_audio(lie, "u2")


def test_one_huge_header_is_one_bad_utterance_in_stage_2(tmp_path):
    import soundfile as sf

    from justkit.frontend.shards import resample_shard

    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(8000, np.float32), 16000)
    big = _flac_claiming(tmp_path / "big.flac", 2**36 - 1)
    (tmp_path / "wav.scp").write_text(f"a {big}\nb {good}\n")
    wav, dur, bad = resample_shard(tmp_path / "wav.scp", str(tmp_path / "out"), 16000)
    assert list(wav) == ["b"] and [b.utt for b in bad] == ["a"] and "header claims" in bad[0].reason


def test_fifos_and_devices_are_not_read(tmp_path):
    from justkit.data.dataset import PackedDataError, PackedDataset
    from justkit.fileio import NotRegularFile
    from justkit.frontend.audio import AudioError, load_audio
    from justkit.frontend.cmvn import compute_cmvn_stats

    fifo = tmp_path / "a.wav"
    os.mkfifo(fifo)
    t0 = time.time()
    with pytest.raises(AudioError, match="a.wav: utterance u1: not a regular file"):
        load_audio(fifo, "u1")
    (tmp_path / "feats.scp").write_text("u1 /dev/zero:0\n")
    with pytest.raises(NotRegularFile, match="feats.scp: utterance u1: '/dev/zero:0': /dev/zero is a device"):
        compute_cmvn_stats(tmp_path / "feats.scp")
    ds = PackedDataset([{"utt": "u1", "feats": "/dev/zero:0", "num_frames": 3, "tokens": [], "lang": "en",
                         "labelled": False, "text": ""}])
    with pytest.raises((NotRegularFile, PackedDataError), match="u1.*/dev/zero is a device"):
        ds.load_feats(0)
    assert time.time() - t0 < 20


def test_a_wav_cut_short_behind_an_intact_header_is_reported(tmp_path, caplog):
    import logging

    import soundfile as sf

    from justkit.frontend.audio import load_audio

    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        load_audio(tmp_path / "a.wav", "whole")
        assert not caplog.text
        x, _ = load_audio(tmp_path / "cut.wav", "u1")
    assert len(x) < 8000 and "cut.wav: utterance u1: read 7989 of the 16000 frames its header announces" in caplog.text


# High 2-3: utterances too short for the model, transcripts too long for their audio

def _fbank_dir(tmp_path: Path, utts: dict) -> Path:
    """A stage-3 dir: ``utts`` = {id: (frames, transcript)}."""
    import kaldiio

    d = tmp_path / "fbank" / "train"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    feats = {u: rng.standard_normal((n, 80)).astype(np.float32) for u, (n, _) in sorted(utts.items())}
    kaldiio.save_ark(str(d / "feats.ark"), feats, scp=str(d / "feats.scp"))
    for name, f in (("text", lambda u: utts[u][1]), ("utt2num_frames", lambda u: utts[u][0]), ("utt2lang", lambda u: "en")):
        (d / name).write_text("".join(f"{u} {f(u)}\n" for u in sorted(utts)))
    return d


def test_stage5_drops_and_lists_utterances_the_model_cannot_train_on(experiment, tmp_path, capfd):
    from justkit.bin.pack_examples import main
    from justkit.data.dataset import read_packed

    d = _fbank_dir(tmp_path, {"a_good": (150, "the cat sat"), "b_short": (4, "the cat"),
                              "c_long": (245, " ".join(["the dog ran a cat sat"] * 100)), "d_dense": (100, "the dog ran a cat sat")})
    out = tmp_path / "packed/train.jsonl"
    tok = str(experiment["dir"] / "token/spm.model")
    assert main(["--tokenizer", tok, str(d), str(out)]) == 0
    assert [e["utt"] for e in read_packed(out)] == ["a_good", "d_dense"]
    bad = {line.split()[1]: line for line in (tmp_path / "packed/train.bad_utts.txt").read_text().splitlines()}
    assert sorted(bad) == ["b_short", "c_long"]
    assert "too short: 4 frames (0.04 s), the model's subsampling needs at least 7" in bad["b_short"]
    assert re.search(r"transcript too long: \d+ tokens for 60 encoder frames", bad["c_long"])
    assert main(["--tokenizer", tok, "--max_tokens_per_second", "12", str(d), str(out)]) == 0
    assert [e["utt"] for e in read_packed(out)] == ["a_good"]
    assert "too dense" in (tmp_path / "packed/train.bad_utts.txt").read_text()


def test_training_skips_a_too_short_row_with_one_warning(tmp_path, caplog):
    import logging

    from justkit.data.loader import DataConfig, build_loader

    rows = [{"utt": f"u{i}", "feats": "x.ark:1", "num_frames": n, "tokens": [1], "lang": "en", "labelled": True,
             "text": "a"} for i, n in enumerate([100, 4, 120, 6, 90])]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        loader = build_loader(DataConfig(max_frames=1000), tmp_path / "p.jsonl", None)
    assert sorted(loader.dataset.utts) == ["u0", "u2", "u4"]
    assert caplog.text.count("shorter than the 7 frames") == 1 and "e.g. u1" in caplog.text


def test_decoding_gives_a_too_short_utterance_an_empty_hypothesis(experiment, tmp_path, caplog):
    import logging

    import kaldiio

    from justkit.data.dataset import PackedDataset
    from justkit.decode.decoder import DecodeConfig, decode_dataset

    feats = {"long": experiment["feats"]["en1"], "tiny": experiment["feats"]["en2"][:4]}
    kaldiio.save_ark(str(tmp_path / "f.ark"), feats, scp=str(tmp_path / "f.scp"))
    scp = dict(line.split(None, 1) for line in (tmp_path / "f.scp").read_text().splitlines())
    ds = PackedDataset([{"utt": u, "feats": scp[u], "num_frames": f.shape[0], "tokens": [1], "lang": "en",
                         "labelled": True, "text": "a"} for u, f in feats.items()])
    with caplog.at_level(logging.WARNING):
        out = decode_dataset(experiment["model"], ds, DecodeConfig(methods=["greedy", "beam"]), progress=False)
    for m in ("greedy", "beam"):
        assert out[m].hyps["tiny"].tokens == [] and "long" in out[m].hyps
    assert "utterance tiny: 4 frames is shorter than the 7 frames the model needs" in caplog.text


def test_torchaudio_rnnt_accepts_logits_padded_beyond_the_longest_lengths():
    from justkit.losses.rnnt import rnnt_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 6, 5, generator=g)           # T and U+1 padded beyond the batch maxima
    targets = torch.randint(1, 5, (2, 5), generator=g)
    t_lens, u_lens = torch.tensor([7, 5]), torch.tensor([3, 2])
    a = rnnt_loss(logits, targets, t_lens, u_lens, backend="torchaudio", reduction="none")
    b = rnnt_loss(logits[:, :7, :4].contiguous(), targets[:, :3], t_lens, u_lens, backend="torchaudio", reduction="none")
    assert torch.allclose(a, b)
    c = rnnt_loss(logits, targets, t_lens, u_lens, backend="numba", reduction="none")
    assert torch.allclose(a, c, atol=1e-4)


# Low: configs and options that ended in a traceback

@pytest.fixture(scope="module")
def train_set(experiment):
    from justkit.text.tokenizer import Tokenizer

    d = experiment["dir"]
    scp = dict(line.split(None, 1) for line in (d / "fbank/feats.scp").read_text().splitlines())
    tok = Tokenizer(d / "token/spm.model")
    texts = dict(x for v in experiment["texts"].values() for x in v)
    rows = [{"utt": u, "feats": scp[u], "num_frames": experiment["feats"][u].shape[0], "tokens": tok.encode(texts[u]),
             "lang": "en", "labelled": True, "text": texts[u]} for u in sorted(scp)]
    (d / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = d / "c.yaml"
    cfg.write_text(f"include: [{ROOT / 'egs/TEMPLATE/conf/model/tiny.yaml'}]\nmodel: {{mode: supervised, "
                   f"vocab_size: {tok.vocab_size}}}\ntrain: {{max_steps: 1, plots: false, tensorboard: false}}\n"
                   "data: {max_frames: 2000}\n")
    return ["--config", str(cfg), "--train_data", str(d / "p.jsonl"), "--tokenizer", str(d / "token/spm.model"),
            "--cmvn", str(d / "fbank/cmvn.ark"), "--feats_dir", str(d / "fbank")]


@pytest.mark.parametrize("opts,msg", [
    (["--train.optim.peak_lr", "nan"], "train.optim.peak_lr must be a finite number > 0, got nan"),
    (["--train.optim.peak_lr", "inf"], "train.optim.peak_lr must be a finite number > 0, got inf"),
    (["--train.optim.betas", "[2, 3]"], r"train.optim.betas must be in \[0, 1\)"),
    (["--model.conformer.num_heads", "3"], "model.d_model 32 is not divisible by model.conformer.num_heads 3"),
    (["--model.conformer.dropout", "1.5"], r"model.conformer: dropout must be in \[0, 1\), got 1.5"),
    (["--data.max_frames", "50"], "data.max_frames=50: no utterance fits in a batch"),
    (["--init", "MODEL", "--model.d_model", "64"], "train.init: the pre-trained encoder does not fit"),
    (["--device", "cuda"], "--device cuda: this machine has no CUDA device"),
    (["--config", "EMPTY"], "EMPTY.yaml"),
])
def test_bad_training_configs_are_one_line_errors(experiment, train_set, tmp_path, capfd, opts, msg):
    from justkit.bin.train import main

    if opts[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "EMPTY.yaml").write_text("")
    opts = [str(experiment["exp"] / "model_avg.pt") if o == "MODEL" else str(tmp_path / "EMPTY.yaml") if o == "EMPTY"
            else o for o in opts]
    import logging

    for h in list(logging.getLogger().handlers):  # handlers of earlier tests write to their captured stderr
        logging.getLogger().removeHandler(h)
    rc = main(train_set + ["--exp", str(tmp_path / "exp"), *opts])
    err = capfd.readouterr().err
    assert rc == 2 and re.search(msg, err) and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "exp/checkpoints").exists() or not list((tmp_path / "exp/checkpoints").glob("ckpt-*"))


# Medium/Low: recipe scripts, jobs, locks, tables

def test_a_signal_to_a_recipe_script_stops_everything_it_started(tmp_path):
    assert ". utils/stop_tree.sh" in (ROOT / "egs/TEMPLATE/asr.sh").read_text()
    script = tmp_path / "recipe.sh"
    job = ("from justkit.fileio import lock_dir; import os, sys, time; l = lock_dir('exp' + sys.argv[1], 'training'); "
           "open('pid.' + sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)")
    script.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n. {ROOT}/utils/stop_tree.sh\n"
                      f"{PY} {ROOT}/utils/run.py JOB=1:2 log/j.JOB.log {PY} -c \"{job}\" JOB\necho finished\n")
    script.chmod(0o755)
    p = subprocess.Popen([str(script)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not all((tmp_path / f"pid.{j}").is_file() for j in (1, 2)):
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)  # the script's own process only, as `timeout` or `kill PID` do
    out, _ = p.communicate(timeout=60)
    pids = [int((tmp_path / f"pid.{j}").read_text()) for j in (1, 2)]
    time.sleep(1)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive and p.returncode != 0 and "finished" not in out
    from justkit.fileio import lock_dir

    for j in (1, 2):
        lock_dir(tmp_path / f"exp{j}", "the next training")  # the locks went with them


@pytest.mark.parametrize("opts,msg", [(["--stage", "13"], "stages are 1-12"),
                                      (["--stage", "7", "--stop_stage", "6"], "must not be below --stage"),
                                      (["--stage", "abc"], "stages are 1-12"),
                                      (["--nj", "many"], "--nj must be a positive integer"),
                                      (["--HOME", "x"], "unknown option --HOME"),
                                      (["--IFS", "x"], "unknown option --IFS"),
                                      (["--name", "x"], "unknown option --name")])
def test_recipe_stage_and_option_errors_exit_2(tmp_path, opts, msg):
    egs = _recipe(tmp_path)
    r = subprocess.run(["bash", "run.sh", *opts], cwd=egs, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not (egs / "exp").exists() and not (egs / "data").exists()


def test_stage1_forks_no_more_processes_than_chunks_of_work(monkeypatch):
    import multiprocessing

    from justkit.corpora import mls

    asked = []
    real = multiprocessing.get_context("fork")

    class Ctx:
        def Pool(self, n):  # noqa: N802
            asked.append(n)
            return real.Pool(1)

    monkeypatch.setattr(multiprocessing, "get_context", lambda kind: Ctx())
    with mls._prober(1000, 250) as probe:
        assert callable(probe)
    assert asked == [4]


def test_a_byte_order_mark_is_not_part_of_an_id(tmp_path):
    import shutil

    from justkit.corpora.prepare_mls import PrepareConfig, prepare
    from justkit.datadir.tables import read_table

    (tmp_path / "wav.scp").write_bytes("\ufeffu1 /a.wav\nu2 /b.wav\n".encode("utf-8"))
    assert list(read_table(tmp_path / "wav.scp")) == ["u1", "u2"]
    root = tmp_path / "mls"
    shutil.copytree(CORPUS / "mls_polish_opus", root / "mls_polish_opus")
    t = root / "mls_polish_opus/train/transcripts.txt"
    first = t.read_text(encoding="utf-8").split("\t", 1)[0]
    t.write_bytes(b"\xef\xbb\xbf" + t.read_bytes())
    prepare(PrepareConfig(mls_root=str(root), out=str(tmp_path / "data"), langs=["pl"]))
    assert first.split("_")[-1] not in (tmp_path / "data/bad_utts.txt").read_text(encoding="utf-8")
    assert any(u.endswith(first) for u in read_table(tmp_path / "data/train_pl/text"))


def test_a_repeated_wav_scp_id_is_named_at_its_source_line(tmp_path):
    (tmp_path / "wav.scp").write_text("a /x.wav\nb /y.wav\n\nc /z.wav\na /w.wav\n")
    r = subprocess.run([PY, str(ROOT / "utils/split_scp.py"), str(tmp_path / "wav.scp"), str(tmp_path / "1.scp"),
                        str(tmp_path / "2.scp")], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "wav.scp:5: id a given twice (first on line 1)" in r.stderr
    assert not (tmp_path / "1.scp").exists()


def test_stage2_without_utt2spk_fails_before_any_work(tmp_path):
    import soundfile as sf

    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "a.wav", np.zeros(16000, np.float32), 16000)
    for name, value in (("wav.scp", str(src / "a.wav")), ("text", "a"), ("utt2lang", "en")):
        (src / name).write_text(f"s-a {value}\n")
    r = subprocess.run(["bash", str(ROOT / "utils/resample_data_dir.sh"), "--nj", "1", str(src), str(tmp_path / "dst")],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "utt2spk: file not found" in r.stderr
    assert not (tmp_path / "dst").exists()


def test_averaging_while_the_experiment_trains_is_refused(tmp_path, capfd):
    from justkit.bin.average import main
    from justkit.fileio import lock_dir

    exp = tmp_path / "exp"
    _ckpts(exp / "checkpoints", (1, 2))
    held = lock_dir(exp, "a training of this experiment")  # noqa: F841
    assert main(["--exp", str(exp), "--out", str(exp / "model_avg.pt"), "--num", "2"]) == 2
    assert "a training (or averaging) of this experiment is running" in capfd.readouterr().err
    assert not (exp / "model_avg.pt").exists()


# Covered by the tests named here (the fault suite's other cases):
#   corrupt / missing / zero-length / 1-sample audio, non-UTF-8 and empty transcripts, duplicate ids,
#     audio without transcript and the reverse: test_mls_prep.py::test_bad_input_reported_and_rest_kept
#   kill -9 of stage 2/3 jobs, re-run bit-identical: test_stage23.py
#   kill -9 of training and an exact resume: test_train.py::test_kill9_then_same_command_resumes
#   a skipped non-finite batch leaves every tensor (running statistics too) unchanged:
#     test_train.py::test_nonfinite_batch_is_skipped_and_weights_unchanged
#   decoding with a tokenizer of another size: test_decode.py::test_decode_cli_writes_decode_dirs
#   download resume, md5 mismatch, truncated archive: test_mls_prep.py
