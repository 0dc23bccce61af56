"""Trainer: exact resume (also after kill -9), checkpoint safety, averaging, non-finite skips, DDP, curves."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from justkit.config import ConfigError, load_yaml
from justkit.train import checkpoint as C
from justkit.train.optim import OptimConfig, WarmupSchedule
from justkit.train.asr import ASRTask
from justkit.train.config import TrainConfig
from justkit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "egs" / "mls" / "conf" / "model" / "tiny.yaml"
PY = sys.executable

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_packed) -> Path:
    return make_packed(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory, make_packed, tiny_words):
    """Packed set + a real sentencepiece tokenizer (for the CLI, which reads the vocab from it)."""
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    d = tmp_path_factory.mktemp("cli")
    items = [(f"t{i}", w) for i, w in enumerate(tiny_words)] + [("t99", " ".join(tiny_words))]
    tok = train_tokenizer({"en": items}, d / "token",
                          TokenizerConfig(vocab_size=14, hard_vocab_limit=False, lang_alpha=1.0))
    return make_packed(d / "data", tokenizer=tok), d / "token" / "spm.model"


def tiny_config(mode: str = "just", vocab: int = 12, **train) -> dict:
    cfg = load_yaml(TINY)
    cfg["model"].update(mode=mode, vocab_size=vocab)
    cfg["train"] = {"max_steps": 6, "log_interval": 1, "keep_last": 0, "plots": False, "num_threads": 1,
                    "optim": {"peak_lr": 2e-3, "warmup_steps": 3}, **train}
    cfg["data"] = {"max_frames": 300, "buckets": 2}
    return cfg


def make_trainer(cfg: dict, exp: Path, train: Path, dev: Path | None = None, cmvn=None, dist=None) -> Trainer:
    """A Trainer for experiment dict ``cfg`` with the given data (the ``paths`` section)."""
    cfg = {**cfg, "paths": {"train": str(train), "dev": str(dev or ""), "cmvn": str(cmvn or "")}}
    return Trainer(ASRTask(cfg), exp, dist)


def train_rows(exp: Path, split: str = "train") -> list[dict]:
    with open(exp / "train.csv", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def final_weights(exp: Path) -> dict:
    state, _ = C.load_latest_checkpoint(exp / "checkpoints")
    return state["model"]


def assert_same_run(a: Path, b: Path, rtol: float = 1e-6) -> None:
    ra, rb = train_rows(a), train_rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for k in ("loss", "rnnt", "contrastive", "mlm", "lr"):
            assert math.isclose(float(x[k]), float(y[k]), rel_tol=rtol, abs_tol=1e-9), (x["step"], k, x[k], y[k])
    wa, wb = final_weights(a), final_weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=rtol, atol=1e-7, msg=k)


# ----------------------------------------------------------------------------- schedule


def test_warmup_then_inverse_sqrt():
    f = WarmupSchedule(OptimConfig(peak_lr=1.0, warmup_steps=4))
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(f(15), math.sqrt(4 / 16))
    lin = WarmupSchedule(OptimConfig(peak_lr=1.0, warmup_steps=2, schedule="linear", decay_steps=6, min_lr=0.2))
    assert math.isclose(lin(1), 1.0) and math.isclose(lin(5), 0.2) and math.isclose(lin(50), 0.2)


# ----------------------------------------------------------------------------- resume


def test_resume_is_exact(data, tmp_path):
    """N steps straight == N/2 steps, stop, resume (crossing an epoch end, with accumulation)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = tiny_config(max_steps=5, accum_grad=2, save_interval=0)
    make_trainer(cfg, straight, data, data, None).train()
    make_trainer(tiny_config(max_steps=2, accum_grad=2), resumed, data, data, None).train()
    assert C.list_checkpoints(resumed / "checkpoints")[-1].name == "ckpt-2.pt"
    first_run_s = C.load_latest_checkpoint(resumed / "checkpoints")[0]["elapsed_s"]
    t = make_trainer(cfg, resumed, data, data, None)
    t.train()
    assert t.step == 5
    assert_same_run(straight, resumed)
    # the wall time in train.csv counts the first run too, not only the resumed one
    assert float(train_rows(resumed)[-1]["elapsed_s"]) > first_run_s > 0
    # a finished run re-run is a no-op
    again = make_trainer(cfg, resumed, data, data, None)
    assert again.train() == {} and again.step == 5


def _run_cli(exp: Path, packed: Path, spm: Path, *extra: str, wait: bool = True, env=None):
    cmd = [PY, "-m", "justkit.bin.train", "--config", str(exp.parent / "conf.yaml"), "--exp", str(exp),
           "--train_data", str(packed), "--dev_data", str(packed), "--tokenizer", str(spm), "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _write_conf(d: Path, cfg: dict) -> None:
    import yaml

    d.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in cfg.items()}
    cfg["model"] = {k: v for k, v in cfg["model"].items() if k != "vocab_size"}
    (d / "conf.yaml").write_text(yaml.safe_dump(cfg))


def test_kill9_then_same_command_resumes(cli_data, tmp_path):
    """A real SIGKILL mid-run; the same command resumes from the newest checkpoint and finishes
    with the same per-step losses and weights as an uninterrupted run."""
    packed, spm = cli_data
    cfg = tiny_config(max_steps=10, save_interval=2, keep_last=3)
    _write_conf(tmp_path, cfg)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = _run_cli(killed, packed, spm, wait=False)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "ckpt-4.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = C.list_checkpoints(killed / "checkpoints")
    assert before and C.checkpoint_path(killed / "checkpoints", 10) not in before
    out = _run_cli(killed, packed, spm)
    assert "resumed from" in out.stderr
    _run_cli(straight, packed, spm)
    kept = [p.name for p in C.list_checkpoints(killed / "checkpoints")]
    assert len(kept) == 3 and kept[-1] == "ckpt-10.pt" and "ckpt-8.pt" in kept  # keep_last=3
    assert [int(r["step"]) for r in train_rows(killed)] == list(range(1, 11))
    assert_same_run(straight, killed)
    log = (killed / "log" / "train.log").read_text()
    assert "step 10 epoch" in log and "resumed from" in log
    assert load_yaml(killed / "config.yaml")["model"]["vocab_size"] > 2


# ----------------------------------------------------------------------------- checkpoint files


def _tiny_state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step)), "n": torch.tensor(step)},
            "step": step, "epoch": 0, "config": {"model": {}}}


def test_corrupt_newest_checkpoint_is_skipped(tmp_path, caplog):
    d = tmp_path / "checkpoints"
    for s in (2, 4, 6):
        C.save_checkpoint(_tiny_state(s), d, s)
    newest = C.checkpoint_path(d, 6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    (d / ".ckpt-8.pt.abc.tmp").write_bytes(b"half")                       # interrupted save
    with caplog.at_level(logging.WARNING):
        state, path = C.load_latest_checkpoint(d)
    assert path.name == "ckpt-4.pt" and state["step"] == 4
    assert "ckpt-6.pt" in caplog.text
    C.checkpoint_path(d, 4).write_bytes(b"not a zip")
    C.checkpoint_path(d, 2).unlink()
    with pytest.raises(C.CheckpointsUnreadable, match="ckpt-4.pt"):  # none loads: stop, never start over
        C.load_latest_checkpoint(d)
    assert C.load_latest_checkpoint(d, restart=True) is None
    assert sorted(p.name for p in (d / "unreadable").iterdir()) == ["ckpt-4.pt", "ckpt-6.pt"]
    with pytest.raises(C.CheckpointError, match="ckpt-6.pt"):
        C.load_checkpoint(d / "unreadable/ckpt-6.pt")


def test_keep_last_k(tmp_path):
    d = tmp_path / "checkpoints"
    for s in (1, 2, 3, 10, 20):
        C.save_checkpoint(_tiny_state(s), d, s, keep_last=2)
    assert [p.name for p in C.list_checkpoints(d)] == ["ckpt-10.pt", "ckpt-20.pt"]


def test_average_checkpoints_and_cli(tmp_path):
    d = tmp_path / "exp" / "checkpoints"
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.bfloat16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.bfloat16), "n": torch.tensor(7)}
    for step, sd in ((1, {"w": torch.zeros(2), "h": torch.zeros(1, dtype=torch.bfloat16), "n": torch.tensor(0)}),
                     (2, a), (3, b)):
        C.save_checkpoint({"model": sd, "step": step, "epoch": 0, "config": {"model": {}}}, d, step)
    from justkit.bin.average import main

    assert main(["--exp", str(tmp_path / "exp"), "--out", str(tmp_path / "avg.pt"), "--num", "2"]) == 0
    avg = C.load_checkpoint(tmp_path / "avg.pt")
    assert torch.equal(avg["model"]["w"], torch.tensor([2.0, 4.0]))
    assert avg["model"]["h"].dtype == torch.bfloat16 and float(avg["model"]["h"]) == 1.5
    assert int(avg["model"]["n"]) == 7 and avg["step"] == 3  # integers: copied from the last
    assert avg["averaged_from"] == ["ckpt-2.pt", "ckpt-3.pt"]
    assert main(["--exp", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt")]) == 2


def test_streamed_average_equals_all_at_once(tmp_path):
    """average_checkpoints maps one checkpoint at a time and reads only its weights; the result
    equals the all-in-memory float64 average (average_state_dicts) to 1e-6."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LSTM(32, 8))
    opt = torch.optim.Adam(model.parameters())
    d = tmp_path / "checkpoints"
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["half"] = torch.randn(7).to(torch.bfloat16)
        sd["count"] = torch.tensor(step)
        C.save_checkpoint({"model": sd, "optimizer": opt.state_dict(), "step": step, "epoch": 1,
                           "config": {"model": {}}}, d, step)
    paths = C.list_checkpoints(d)
    old = C.average_state_dicts([C.load_checkpoint(p)["model"] for p in paths])
    new = C.average_checkpoints(paths, tmp_path / "avg.pt")["model"]
    assert new.keys() == old.keys()
    for k in old:
        assert new[k].dtype == old[k].dtype and new[k].shape == old[k].shape, k
        assert torch.allclose(new[k].double(), old[k].double(), rtol=0, atol=1e-6), k
    assert int(new["count"]) == 5
    assert "optimizer" not in C.load_checkpoint(tmp_path / "avg.pt")
    # a checkpoint of another model is refused with its name
    C.save_checkpoint({"model": {"other": torch.zeros(1)}, "step": 9, "epoch": 1, "config": {"model": {}}}, d, 9)
    with pytest.raises(C.CheckpointError, match="ckpt-9.pt"):
        C.average_checkpoints(paths + [d / "ckpt-9.pt"], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_load_model_rebuilds_from_config(data, tmp_path):
    exp = tmp_path / "exp"
    make_trainer(tiny_config("supervised", max_steps=2), exp, data, None, None).train()
    paths = C.list_checkpoints(exp / "checkpoints")
    C.average_checkpoints(paths, exp / "model_avg.pt")
    from justkit.models.factory import load_model

    model, cfg = load_model(exp / "model_avg.pt", "cpu")
    assert cfg["model"]["mode"] == "supervised" and not model.training
    avg = C.load_checkpoint(exp / "model_avg.pt")["model"]
    sd = model.state_dict()
    assert sd.keys() == avg.keys() and all(torch.equal(sd[k], avg[k]) for k in sd)


# ----------------------------------------------------------------------------- fine-tuning


def test_init_loads_pretrained_encoder(data, tmp_path):
    pre = tmp_path / "pre"
    make_trainer(tiny_config("pretrain", max_steps=2), pre, data, None, None).train()
    ckpt = C.list_checkpoints(pre / "checkpoints")[-1]
    t = make_trainer(tiny_config("supervised", max_steps=1, init=str(ckpt)), tmp_path / "ft", data, None, None)
    t._resume_or_init()
    src = C.load_checkpoint(ckpt)["model"]
    own = t.model.state_dict()
    enc = [k for k in own if k.startswith(("frontend.", "contrastive_blocks.", "mlm_blocks."))]
    assert enc and all(torch.equal(own[k], src[k]) for k in enc)


# ----------------------------------------------------------------------------- non-finite


def test_nonfinite_batch_is_skipped_and_weights_unchanged(tmp_path, make_packed):
    data = make_packed(tmp_path / "data", nan_utts=("u003",))
    t = make_trainer(tiny_config("supervised", max_steps=1), tmp_path / "exp", data, None, None)
    # Direct check: an update whose batch holds the NaN utterance changes nothing.
    ds = t.train_loader.dataset
    idx = ds.utts.index("u003")
    batch = t.train_loader.collate_fn(ds.__getitems__([idx, (idx + 1) % len(ds)]))
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    terms, finite, _ = t._micro_step(batch, 1.0, sync=True)
    assert not bool(finite)
    applied, _ = t._apply_update(finite)
    assert not applied and t.step == 0 and not t.optimizer.state
    after = t.model.state_dict()
    # every tensor, the batch-norm running statistics and counters included
    assert all(torch.equal(before[k], after[k]) for k in before)
    # A full epoch over the data set with the NaN utterance: skipped, logged, weights finite.
    t2 = make_trainer(tiny_config("supervised", max_steps=0, max_epochs=1), tmp_path / "exp2", data, None, None)
    t2.train()
    assert t2.skipped_total >= 1
    assert all(torch.isfinite(v).all() for v in t2.model.state_dict().values() if v.is_floating_point())
    saved = final_weights(tmp_path / "exp2")
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


def test_grad_balance_is_logged(tmp_path, make_packed):
    """Each term's share of the shared-encoder gradient: in the log rows, summing to 1, with the
    unsupervised terms a sizeable share under per-frame RNN-T normalisation; measuring does
    not change the training run itself."""
    data = make_packed(tmp_path / "data")
    cfg = tiny_config("just", max_steps=4, grad_balance_interval=2, plots=True)
    make_trainer(cfg, tmp_path / "a", data, None, None).train()
    rows = train_rows(tmp_path / "a")
    measured = [r for r in rows if r.get("gshare_rnnt")]
    assert [int(r["step"]) for r in measured] == [1, 3]  # measured at steps 0 and 2, logged with the next line
    for r in measured:
        shares = {k: float(v) for k, v in r.items() if k.startswith("gshare_") and v}
        assert set(shares) == {"gshare_rnnt", "gshare_contrastive", "gshare_diversity", "gshare_mlm"}
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
        assert shares["gshare_contrastive"] + shares["gshare_mlm"] > 0.02
        assert float(r["gnorm_rnnt"]) > 0
    assert (tmp_path / "a" / "plots" / "grad_balance.png").stat().st_size > 0
    make_trainer(tiny_config("just", max_steps=4, plots=True), tmp_path / "b", data, None, None).train()
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert not (tmp_path / "b" / "plots" / "grad_balance.png").exists()


# ----------------------------------------------------------------------------- DDP


def test_ddp_two_processes_match_single_process(cli_data, tmp_path):
    """torchrun, 2 CPU ranks (gloo) == 1 process with accum_grad=2 over the same batches."""
    packed, spm = cli_data
    # supervised + no dropout/SpecAugment: the forward is deterministic, so the only
    # difference is where the two batches' gradients are summed. Two updates stay inside the
    # first epoch (DDP drops an odd last batch, accumulation does not).
    cfg = tiny_config("supervised", max_steps=2, log_interval=1)
    _write_conf(tmp_path, cfg)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "justkit.bin.train", "--config", str(tmp_path / "conf.yaml"), "--exp", str(ddp),
           "--train_data", str(packed), "--dev_data", str(packed), "--tokenizer", str(spm), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "weights identical on all 2 ranks" in p.stderr
    _run_cli(single, packed, spm, "--train.accum_grad", "2")
    wd, ws = final_weights(ddp), final_weights(single)
    for k in wd:
        if wd[k].is_floating_point() and "running" not in k:
            torch.testing.assert_close(wd[k], ws[k], rtol=1e-4, atol=1e-5, msg=k)
    rd, rs = train_rows(ddp), train_rows(single)
    for x, y in zip(rd, rs):
        assert math.isclose(float(x["loss"]), float(y["loss"]), rel_tol=1e-4)


# ----------------------------------------------------------------------------- outputs


def test_csv_plots_and_config_errors(data, tmp_path):
    exp = tmp_path / "exp"
    cfg = tiny_config(max_steps=3, plots=True, log_interval=1)
    make_trainer(cfg, exp, data, data, None).train()
    rows = train_rows(exp)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for k in ("loss", "rnnt", "contrastive", "diversity", "mlm", "lr", "frames_per_s"):
        assert all(r[k] != "" for r in rows), k
    assert train_rows(exp, "dev"), "no dev evaluation row"
    for name in ("loss", "rnnt", "contrastive", "diversity", "mlm", "lr"):
        png = exp / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    with pytest.raises(ConfigError, match="max_steps"):
        make_trainer(tiny_config(max_steps=0), tmp_path / "e2", data, None, None)
    from justkit.config import from_dict
    from justkit.train.trainer import TrainConfig

    tc = from_dict(TrainConfig, {"max_steps": "1e3", "optim": {"peak_lr": "3e-3"}})  # YAML reads 3e-3 as str
    assert tc.max_steps == 1000 and tc.optim.peak_lr == 3e-3
    with pytest.raises(ConfigError, match="train.optim.peak_lr"):
        from_dict(TrainConfig, {"max_steps": 1, "optim": {"peak_lr": "fast"}}, "train")
    bad = tiny_config()
    bad["trian"] = {}
    with pytest.raises(ConfigError, match="trian"):
        make_trainer(bad, tmp_path / "e3", data, None, None)


def test_plots_mark_the_codebook_size_and_dev_passes_say_epochs_done(data, tmp_path, caplog):
    """codebook_perplexity.png gets the codebook size (groups x entries) as a reference line, a
    supervised model none; a dev pass logs the epochs done, and the dev loader's pass logs no epoch."""
    cfg = tiny_config("just", max_steps=3, plots=True, log_interval=1)
    trainer = make_trainer(cfg, tmp_path / "exp", data, data, None)
    q = trainer.task.experiment.model.quantizer
    assert trainer.curves.references == {"codebook_perplexity": (float(q.groups * q.entries), trainer.curves.references[
        "codebook_perplexity"][1])} and str(q.entries) in trainer.curves.references["codebook_perplexity"][1]
    with caplog.at_level(logging.INFO):
        trainer.train()
    assert (tmp_path / "exp" / "plots" / "codebook_perplexity.png").stat().st_size > 0
    assert (tmp_path / "exp" / "plots" / "overview.png").stat().st_size > 0
    dev_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dev at step")]
    assert dev_lines and all("epochs done" in m for m in dev_lines), dev_lines
    sampler = [r.getMessage() for r in caplog.records if r.name == "justkit.data.sampler" and r.levelno >= logging.INFO]
    assert sampler and all(m.startswith("epoch ") for m in sampler) and len(sampler) == 1, sampler
    assert ASRTask(trainer.task.experiment.to_dict() | {"model": {**trainer.task.config["model"],
                                                                  "mode": "supervised"}}).plot_references() == {}


@pytest.mark.parametrize("override,message", [
    (["--model.mode", "foo"], "model.mode must be one of"),
    (["--model.d_modle", "8"], "model: unknown key(s) ['d_modle']"),
    (["--data.max_frames", "0"], "data.max_frames must be > 0"),
    (["--train.accum_grad", "0"], "train.accum_grad must be >= 1"),
    (["--train.optim.peak_lr", "fast"], "train.optim.peak_lr: expected a number"),
    (["--train.plots", "maybe"], "train.plots: expected true or false"),
])
def test_config_errors_in_any_section_end_with_one_line_and_exit_2(cli_data, tmp_path, capfd, override, message):
    from justkit.bin.train import main

    packed, spm = cli_data
    _write_conf(tmp_path, tiny_config(max_steps=1))
    rc = main(["--config", str(tmp_path / "conf.yaml"), "--exp", str(tmp_path / "exp"), "--train_data", str(packed),
               "--tokenizer", str(spm), *override])
    err = capfd.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    # a typo in the command's own options is argparse's error (exit 2), not a YAML key error
    with pytest.raises(SystemExit) as e:
        main(["--config", str(tmp_path / "conf.yaml"), "--exp", str(tmp_path / "exp"), "--train_data", str(packed),
              "--tokenizer", str(spm), "--devce", "cpu"])
    assert e.value.code == 2 and "unrecognized arguments: --devce" in capfd.readouterr().err


def test_bad_config_key_writes_nothing(cli_data, tmp_path, capfd):
    from justkit.bin.train import main

    packed, spm = cli_data
    _write_conf(tmp_path, tiny_config(max_steps=1))
    rc = main(["--config", str(tmp_path / "conf.yaml"), "--exp", str(tmp_path / "exp"), "--train_data", str(packed),
               "--tokenizer", str(spm), "--model.d_modle", "8"])
    assert rc == 2 and "d_modle" in capfd.readouterr().err
    assert not (tmp_path / "exp").exists()  # no empty exp/<tag>/log left behind


def test_print_config_prints_the_resolved_config_and_writes_nothing(cli_data, tmp_path):
    import yaml

    packed, spm = cli_data
    _write_conf(tmp_path, tiny_config(max_steps=1))
    p = _run_cli(tmp_path / "exp", packed, spm, "--model.d_model", "16", "--print_config")
    cfg = yaml.safe_load(p.stdout)
    assert cfg["model"]["d_model"] == 16 and cfg["model"]["vocab_size"] == 14  # from the tokenizer
    assert cfg["train"]["max_steps"] == 1 and cfg["paths"]["tokenizer"] == str(spm)
    assert not (tmp_path / "exp").exists()


def test_another_model_in_a_trained_experiment_is_refused(cli_data, tmp_path):
    """A run whose config makes another model than the one the experiment holds stops before
    writing anything, naming the differing keys; a resume with the same config notes nothing (no
    false list-vs-tuple change); a train: change is listed and applied."""
    packed, spm = cli_data
    _write_conf(tmp_path, tiny_config(max_steps=2))
    exp = tmp_path / "exp"
    _run_cli(exp, packed, spm)
    before = {p.name: p.stat().st_mtime_ns for p in [exp / "config.yaml", *(exp / "checkpoints").iterdir()]}
    log_before = (exp / "log" / "train.log").read_text()
    cmd = [PY, "-m", "justkit.bin.train", "--config", str(tmp_path / "conf.yaml"), "--exp", str(exp),
           "--train_data", str(packed), "--tokenizer", str(spm), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for extra, want in ((["--model.d_model", "16"], "model.d_model: 32 -> 16"),
                        (["--loss.w_ctc", "0.3"], "new parameters: ctc_head"),
                        (["--check", "--model.d_model", "16"], "model.d_model: 32 -> 16")):
        r = subprocess.run(cmd + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 2 and want in r.stderr and "Nothing was written" in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        assert {p.name: p.stat().st_mtime_ns for p in [exp / "config.yaml", *(exp / "checkpoints").iterdir()]} == before
        assert (exp / "log" / "train.log").read_text() == log_before
    r = _run_cli(exp, packed, spm, "--check")  # the same config: nothing to say
    assert "config changed" not in r.stderr, r.stderr
    r = _run_cli(exp, packed, spm, "--train.max_steps", "3")
    assert "config changed" in r.stderr and "train.max_steps: 2 -> 3" in r.stderr
    assert r.stderr.count("config changed") == 1, r.stderr  # no false note (betas as a list vs a tuple)
    from justkit.experiment import Experiment

    assert Experiment.load(exp).train.max_steps == 3


# ----------------------------------------------------------------------------- features on the fly


def make_fly_data(d: Path, n: int = 12) -> tuple[Path, Path, Path]:
    """16 kHz FLACs, stage 3's outputs over them (features dir with conf/fbank.yaml) and two packed
    sets: stored float32 features and audio entries. Returns (stored.jsonl, fly.jsonl, features dir)."""
    import soundfile as sf

    from justkit.config import dump_yaml, to_dict
    from justkit.frontend.fbank import FbankConfig
    from justkit.frontend.shards import fbank_shard

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wav = {}
    for i in range(n):
        utt = f"u{i:03d}"
        t = np.arange(int(rng.integers(5000, 12000))) / 16000
        x = np.sin(2 * np.pi * rng.uniform(100, 300) * t) * 0.1 + 0.01 * rng.standard_normal(len(t))
        sf.write(d / f"{utt}.flac", x.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
        wav[utt] = str(d / f"{utt}.flac")
    (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wav.items()))
    cfg = FbankConfig()
    feats = d / "features"
    (feats / "conf").mkdir(parents=True)
    dump_yaml({"fbank": to_dict(cfg)}, feats / "conf" / "fbank.yaml")
    (feats / "feat_dim").write_text("80\n")
    scp, frames, _ = fbank_shard(d / "wav.scp", str(feats / "feats.ark"), cfg)
    out = []
    tokens = {u: rng.integers(2, 12, size=3).tolist() for u in wav}
    for name, where in (("stored", lambda u: {"feats": scp[u]}), ("fly", lambda u: {"feats": None, "audio": wav[u]})):
        with open(d / f"{name}.jsonl", "w") as f:
            for i, u in enumerate(wav):
                f.write(json.dumps({"utt": u, **where(u), "num_frames": int(frames[u]),
                                    "tokens": tokens[u], "lang": "en" if i % 2 else "de",
                                    "labelled": i % 4 != 0, "text": "x"}) + "\n")
        out.append(d / f"{name}.jsonl")
    return out[0], out[1], feats


def test_features_on_the_fly_train_as_stored(tmp_path):
    """Training from audio entries (fbank in the loader) is the same run as from stored float32
    features; with data.features_on device (fbank + CMVN in the training step, batched) it matches
    up to float rounding; the experiment keeps its own copy of the fbank options."""
    from justkit.experiment import Experiment
    from justkit.frontend.cmvn import accumulate, write_cmvn

    stored, fly, feats = make_fly_data(tmp_path / "data")
    mats = [kaldiio.load_mat(json.loads(l)["feats"]) for l in stored.read_text().splitlines()]
    write_cmvn(feats / "cmvn.ark", accumulate(mats))
    runs = {}
    for name, packed, on in (("stored", stored, "loader"), ("fly", fly, "loader"), ("device", fly, "device")):
        cfg = tiny_config(max_steps=3, save_interval=0)
        cfg["data"]["features_on"] = on
        cfg["paths"] = {"train": str(packed), "dev": str(packed), "cmvn": str(feats / "cmvn.ark"),
                        "features": str(feats)}
        exp = Experiment.from_dict(cfg)
        Trainer(ASRTask(exp), tmp_path / name).train()
        runs[name] = tmp_path / name
    assert_same_run(runs["stored"], runs["fly"])
    assert_same_run(runs["fly"], runs["device"], rtol=1e-4)
    exp = Experiment.from_dict({**tiny_config(), "paths": {"features": str(feats)}})
    assert exp.save_frontend(tmp_path / "fly") == tmp_path / "fly" / "fbank.yaml"
    (feats / "conf" / "fbank.yaml").unlink()  # the experiment dir's own copy is what is read back
    exp.save(tmp_path / "fly")
    assert Experiment.load(tmp_path / "fly").frontend_config()["num_mel_bins"] == 80


def test_epoch_end_work_every_n_epochs(tmp_path, data):
    """train.epoch_end_interval 2: the dev pass and the checkpoint at the ends of epochs 2 and 4
    only (epochs of a few steps must not be mostly dev passes); the end of training has both."""
    cfg = tiny_config("supervised", max_steps=0, max_epochs=5, epoch_end_interval=2, keep_last=0)
    make_trainer(cfg, tmp_path / "exp", data, data).train()
    dev = train_rows(tmp_path / "exp", "dev")
    assert [int(r["epoch"]) for r in dev] == [2, 4, 5]
    ckpts = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "exp/checkpoints").glob("ckpt-*.pt"))
    per_epoch = ckpts[0] // 2
    assert ckpts == [2 * per_epoch, 4 * per_epoch, ckpts[-1]] and ckpts[-1] > 4 * per_epoch
    with pytest.raises(ConfigError, match="epoch_end_interval must be >= 1"):
        TrainConfig(max_steps=1, epoch_end_interval=0)
