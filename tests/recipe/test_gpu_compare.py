"""local/gpu_compare.sh --dry_run true: the GPU comparison's every stage on the CPU at tiny sizes
(2 languages, the tiny model, 6 updates, one seed), so that the GPU run is one command known to
work (issue 23; docs/paper_mini.md, "On a GPU")."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from justkit.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_configs_are_the_stated_sizes_and_modes():
    for system, mode in (("supervised", "supervised"), ("just", "just"), ("just_finetune", "just"),
                         ("pretrain", "pretrain")):
        full = load_yaml(ROOT / f"egs/mls/conf/gpu_compare/{system}.yaml")
        dry = load_yaml(ROOT / f"egs/mls/conf/gpu_compare_dry/{system}.yaml")
        assert full["model"]["mode"] == dry["model"]["mode"] == mode, system
        assert full["model"]["d_model"] == 256
        assert full["model"]["num_contrastive_blocks"] + full["model"]["num_mlm_blocks"] == 8
        assert dry["model"]["d_model"] == 32 and dry["train"]["max_steps"] == 6
        if system != "pretrain":
            assert full["train"]["grad_alignment_interval"] > 0 and full["train"]["max_epochs"] == 150


@pytest.mark.slow
def test_gpu_compare_dry_run_writes_every_result(tmp_path):
    for name in ("mls", "TEMPLATE"):
        shutil.copytree(ROOT / "egs" / name, tmp_path / "egs" / name, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp*", "downloads", "data_pool", "results"))
    (tmp_path / "utils").symlink_to(ROOT / "utils")
    egs = tmp_path / "egs/mls"
    env = dict(os.environ, JUSTKIT_ROOT=str(ROOT), JUSTKIT_NO_INSTALL="1",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    r = subprocess.run(["bash", "local/gpu_compare.sh", "--dry_run", "true"], cwd=egs, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((egs / "results/gpu_compare_dry.json").read_text())
    assert set(res["systems"]) == {"supervised", "just", "just_finetune"} and res["langs"] == ["en", "pl"]
    assert all(s["seeds"] == 1 and 0 <= s["avg"] for s in res["systems"].values())
    runs = {Path(r["exp"]).name for r in json.loads((egs / "results/alignment_gpu_compare_dry.json").read_text())["runs"]}
    assert runs == {"supervised_s0", "just_s0", "just_finetune_s0"}
    probe = json.loads((egs / "results/probe_gpu_compare_dry.json").read_text())
    assert len(probe) == 3 and all("cer" in v for v in probe.values())
    # just_finetune started from the one pre-training
    cfg = load_yaml(egs / "exp_gpu_compare_dry/just_finetune_s0/config.yaml")
    assert cfg["train"]["init"].endswith("exp_gpu_compare_dry/pretrain_s0/model_avg.pt")
    # the GPU run's own names are untouched
    assert not (egs / "results/gpu_compare.json").exists() and not (egs / "exp_gpu_compare").exists()
    bad = subprocess.run(["bash", "local/gpu_compare.sh", "--dry_run", "maybe"], cwd=egs, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--dry_run must be true or false" in bad.stderr
