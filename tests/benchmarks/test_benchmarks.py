"""benchmarks/gpu_check.sh --dry-run: the GPU check's whole sequence, tiny sizes, on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "JUSTKIT_NO_INSTALL": "1", "JUSTKIT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    p = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--json", str(out), "--out", str(tmp_path / "r.md")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    recs = {r["section"]: r for r in json.loads(out.read_text())}
    assert sorted(recs) == list("abcdefg") and all(r["ok"] for r in recs.values())
    assert all(r["loss_diff"] < 1e-4 for r in recs["a"]["rows"])           # kernels agree
    assert recs["b"]["device_run"]["frames_per_s"] > 0 and recs["c"]["run"]["flops_per_step"] > 0
    assert recs["e"]["max_weight_diff"] == 0.0                              # resume is exact
    assert recs["f"]["train_step_syncs"] == 0 and recs["f"]["greedy_sync_free"] < recs["f"]["greedy_per_frame"]
    report = (tmp_path / "r.md").read_text()
    assert recs["g"]["max_abs_diff"] < 1e-3 and recs["g"]["x_real_time"] > 0  # device fbank = loader's
    assert "7/7 checks passed" in report and "| JUST training step" in report
