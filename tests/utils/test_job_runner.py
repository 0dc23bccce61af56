"""utils/run.py: local jobs, logs, failures, --max-jobs-run, signals, and the Slurm backend via a fake sbatch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "utils" / "run.py"
# As egs/*/path.sh does: the venv's python first on PATH; run.py is started by its shebang.
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUN), *args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_jobs_succeed_with_per_job_logs(tmp_path):
    r = run(["JOB=1:3", "exp/log/deep/x.JOB.log", "echo", "job", "JOB", "of", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    for j in (1, 2, 3):
        lines = (tmp_path / f"exp/log/deep/x.{j}.log").read_text().splitlines()
        assert lines[0] == f"# echo job {j} of 3"
        assert lines[1].startswith("# Running on ") and lines[2].startswith("# Started at ")
        assert lines[3] == f"job {j} of 3"
        assert lines[4].startswith("# Accounting: time=") and lines[4].endswith(" threads=1")
        assert lines[5].startswith("# Ended (code 0) at ")


def test_command_line_joined_like_run_pl(tmp_path):
    # A quoted '|' is a pipe; a word with a space stays one word; '>' redirects.
    r = run(["log/a.log", "printf", "'%s\\n'", "x y", "z", "|", "sort", "-r", ">", "out.txt"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.txt").read_text() == "z\nx y\n"
    # pipefail: a failure early in a pipeline fails the job
    r = run(["log/b.log", "false", "|", "cat"], tmp_path)
    assert r.returncode == 1
    assert "job failed (exit code 1), log is in log/b.log" in r.stderr


def test_failing_jobs_are_named_with_their_logs(tmp_path):
    r = run(["JOB=1:4", "log/x.JOB.log", "echo", "JOB;", "test", "JOB", "-ne", "2", "-a", "JOB", "-ne", "4"],
            tmp_path)
    assert r.returncode == 1
    assert "run.py: 2 / 4 jobs failed: 2 (log/x.2.log), 4 (log/x.4.log)" in r.stderr
    assert "# Ended (code 1)" in (tmp_path / "log/x.2.log").read_text()
    assert "# Ended (code 0)" in (tmp_path / "log/x.3.log").read_text()


def test_usage_errors(tmp_path):
    r = run(["JOB=1:3", "log/one.log", "true"], tmp_path)
    assert r.returncode == 2 and "put JOB in its name" in r.stderr
    r = run(["--max-jobs", "2", "log/x.log", "true"], tmp_path)
    assert r.returncode == 2 and "unknown option --max_jobs" in r.stderr
    r = run(["--backend", "pbs", "log/x.log", "true"], tmp_path)
    assert r.returncode == 2 and "--backend must be local or slurm" in r.stderr


def _max_overlap(path: Path) -> int:
    events = []
    for line in path.read_text().split():
        kind, t = line.split(":")
        events.append((int(t), 1 if kind == "start" else -1))
    cur = best = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        cur += d
        best = max(best, cur)
    return best


@pytest.mark.parametrize("max_jobs", [1, 2])
def test_max_jobs_run_is_honoured(tmp_path, max_jobs):
    cmd = "echo start:$(date +%s%N) >> ev; sleep 0.25; echo end:$(date +%s%N) >> ev"
    r = run([f"--max-jobs-run={max_jobs}", "JOB=1:4", "log/x.JOB.log", *cmd.split(" ")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert _max_overlap(tmp_path / "ev") == max_jobs


def test_sigterm_kills_running_jobs(tmp_path):
    proc = subprocess.Popen(
        [str(RUN), "JOB=1:2", "log/x.JOB.log", "sleep", "60", "&", "echo", "$!", ">", "pid.JOB;",
         "wait"], cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    pid_files = [tmp_path / "pid.1", tmp_path / "pid.2"]
    deadline = time.monotonic() + 15
    while not all(p.is_file() and p.read_text().strip() for p in pid_files):
        assert time.monotonic() < deadline, "jobs did not start"
        time.sleep(0.05)
    sleepers = [int(p.read_text()) for p in pid_files]
    assert all(alive(p) for p in sleepers)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err
    deadline = time.monotonic() + 5
    while any(alive(p) for p in sleepers):
        assert time.monotonic() < deadline, "job processes survived SIGTERM of the runner"
        time.sleep(0.05)
    log1 = (tmp_path / "log/x.1.log").read_text()
    assert "# Killed by run.py on SIGTERM" in log1 and "# Ended (code 143)" in log1


FAKE_SBATCH = """\
#!{python}
# Fake sbatch for the tests: records its argv, runs the array tasks of the script here.
import os, re, subprocess, sys
script = sys.argv[-1]
with open(os.environ["FAKE_SBATCH_ARGV"], "w") as f:
    f.write("\\n".join(sys.argv[1:]))
assert "--wait" in sys.argv and "--parsable" in sys.argv
m = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)(?:%(\\d+))?$", open(script).read(), re.M)
first, last = int(m.group(1)), int(m.group(2))
print("4242", flush=True)
skip = os.environ.get("FAKE_SBATCH_SKIP", "").split()
rc = 0
for t in range(first, last + 1):
    if str(t) in skip:
        rc = 1
        continue
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(t), SLURM_ARRAY_JOB_ID="4242")
    rc |= subprocess.call(["bash", script], env=env) != 0
sys.exit(rc)
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    sb = bindir / "sbatch"
    sb.write_text(FAKE_SBATCH.format(python=sys.executable))
    sb.chmod(0o755)
    env = dict(ENV, PATH=f"{bindir}:{ENV['PATH']}", FAKE_SBATCH_ARGV=str(tmp_path / "argv"))
    work = tmp_path / "work"
    work.mkdir()
    return work, env


def test_slurm_backend_via_fake_sbatch(fake_sbatch, tmp_path):
    work, env = fake_sbatch
    r = run(["--backend", "slurm", "--max-jobs-run", "2", "--slurm-opts", "--partition=cpu --time=1:00:00",
             "JOB=1:3", "log/x.JOB.log", "echo", "task", "JOB", "|", "tee", "out.JOB;", "test", "JOB", "-ne", "2"],
            work, env=env)
    assert r.returncode == 1
    assert "run.py: 1 / 3 jobs failed: 2 (log/x.2.log)" in r.stderr
    script = (work / "log/q/x.JOB.sh").read_text()
    assert "#SBATCH --array=1-3%2\n" in script
    assert "#SBATCH --output=" in script and "x.JOB.%a.out" in script
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[:2] == ["--wait", "--parsable"]
    assert argv[2:4] == ["--partition=cpu", "--time=1:00:00"]
    assert argv[-1] == "log/q/x.JOB.sh"
    for j, code in ((1, 0), (2, 1), (3, 0)):
        lines = (work / f"log/x.{j}.log").read_text().splitlines()
        assert lines[0] == f"# echo task {j} | tee out.{j}; test {j} -ne 2"
        assert lines[3] == f"task {j}"
        assert lines[-2].startswith("# Accounting: time=")
        assert lines[-1].startswith(f"# Ended (code {code}) at ")
        assert (work / f"log/q/x.JOB.{j}.status").read_text().strip() == str(code)
        assert (work / f"out.{j}").read_text() == f"task {j}\n"


def test_slurm_task_without_status_is_a_failure(fake_sbatch):
    work, env = fake_sbatch
    env["FAKE_SBATCH_SKIP"] = "3"
    (work / "log/q").mkdir(parents=True)
    (work / "log/q/x.JOB.3.status").write_text("0\n")  # stale status of an earlier run must not count
    r = run(["--backend", "slurm", "JOB=1:3", "log/x.JOB.log", "true"], work, env=env)
    assert r.returncode == 1
    assert "1 / 3 jobs failed: 3 (log/x.3.log)" in r.stderr
    assert "%" not in (work / "log/q/x.JOB.sh").read_text().split("--array=")[1].split("\n")[0]
