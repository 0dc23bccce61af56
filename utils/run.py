#!/usr/bin/env python3
"""Parallel job runner used like Kaldi's run.pl: run.py [opts] [JOB=1:N] log/x.JOB.log cmd args ... JOB ...

  utils/run.py JOB=1:4 exp/log/fbank.JOB.log python -m justkit.bin.fbank data/split4/JOB
  utils/run.py --max_jobs_run 2 JOB=1:8 log/x.JOB.log "cat a.JOB | sort > b.JOB"
  utils/run.py log/train.log python -m justkit.bin.train ...        # one job
  utils/run.py --backend slurm --slurm_opts '--partition=cpu --time=1:00:00' JOB=1:100 log/x.JOB.log ...

The command words are joined into one bash command line as run.pl does: a word without
whitespace goes in verbatim (so a quoted '|' or '>' acts as a pipe or redirection), a
word with whitespace is quoted as one word. Every occurrence of the job variable (JOB,
or the name given in NAME=a:b) is replaced by the job index, in the log path too. Each
job runs as `bash -o pipefail -c <command>` (pipefail so that a failing stage of a
pipeline fails the job) with stdout and stderr in its log, which starts with the command,
host and start time and ends with `# Accounting: time=S threads=T` and
`# Ended (code X) at <date>`.

Exit status: 0 if every job succeeded; 1 otherwise, with the failed jobs and their logs
named on stderr; 2 for a bad command line; 128+signal when stopped by SIGINT/SIGTERM/SIGHUP
(running jobs are killed). Jobs also end when the runner is killed outright (SIGKILL):
each job's process group is sent SIGTERM when its runner dies. A re-run keeps the earlier
log as <log>.1 (.2, ... up to 5) instead of truncating it.

Options (also written --opt=value; Kaldi's dashed spellings are accepted too):
  --backend local|slurm    where jobs run (default: local)
  --max_jobs_run N         local: jobs at once (default: the core count)
  --slurm_opts '...'       slurm: options passed to sbatch (default: none)
  --num_threads N          threads per job: accounting; slurm --cpus-per-task (default: 1)
  --gpu N                  slurm --gres=gpu:N; ignored locally (default: 0)
  --mem M                  slurm --mem; ignored locally (default: none)
  --help                   this text
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.config import ConfigError, from_dict  # noqa: E402
from justkit.fileio import atomic_write_text  # noqa: E402

PROG = "run.py"
KILL_GRACE_S = 3.0  # after SIGTERM, how long jobs get before SIGKILL


class UsageError(ValueError):
    """Bad command line."""


class Stopped(Exception):
    """SIGINT/SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM interrupt the runner only while it waits; elsewhere they are held.

    Held, so that a job is never started without being recorded (and then not killed).
    """

    waiting = False
    pending: int | None = None

    @classmethod
    def handler(cls, signum: int, frame) -> None:
        if cls.waiting:
            raise Stopped(signum)
        cls.pending = signum

    @classmethod
    def wait(cls, fn, *args):
        """Call ``fn(*args)`` (a blocking wait) so that a signal, also one held before, stops it."""
        if cls.pending is not None:
            raise Stopped(cls.pending)
        cls.waiting = True
        try:
            return fn(*args)
        finally:
            cls.waiting = False


@dataclass
class RunnerConfig:
    """Options of the job runner (see the module docstring)."""

    backend: str = "local"
    max_jobs_run: int | None = None
    slurm_opts: str = ""
    num_threads: int = 1
    gpu: int = 0
    mem: str = ""


@dataclass
class JobSpec:
    """What to run: jobs ``first..last`` of ``command`` logging to ``log_template``; ``var`` is replaced."""

    var: str
    first: int
    last: int
    log_template: str
    command: str

    def jobs(self) -> range:
        return range(self.first, self.last + 1)

    def log(self, job: int) -> str:
        return self.log_template.replace(self.var, str(job))

    def cmd(self, job: int) -> str:
        return self.command.replace(self.var, str(job))


OPTIONS = {
    "--backend": "backend",
    "--max_jobs_run": "max_jobs_run",
    "--slurm_opts": "slurm_opts",
    "--num_threads": "num_threads",
    "--gpu": "gpu",
    "--mem": "mem",
}
INT_OPTIONS = {"max_jobs_run", "num_threads", "gpu"}


def join_command(words: list[str]) -> str:
    """Join words into one bash command line the way run.pl does (see the module docstring)."""
    return " ".join(w if w and not re.search(r"\s", w) else shlex.quote(w) for w in words)


def parse_args(argv: list[str]) -> tuple[RunnerConfig, JobSpec]:
    """Parse ``[opts] [VAR=a:b] log cmd ...`` into a config and a job spec."""
    opts: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        name, eq, val = argv[i].partition("=")
        name = "--" + name[2:].replace("-", "_")  # Kaldi's run.pl spells them with dashes
        if name not in OPTIONS:
            raise UsageError(f"unknown option {name} (known: {' '.join(OPTIONS)}; --help)")
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"option {name} needs a value")
            i += 1
            val = argv[i]
        key = OPTIONS[name]
        if key in INT_OPTIONS:
            try:
                opts[key] = int(val)
            except ValueError:
                raise UsageError(f"option {name} needs an integer, got {val!r}") from None
        else:
            opts[key] = val
        i += 1
    try:
        cfg = from_dict(RunnerConfig, opts, "run.py options")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if cfg.backend not in ("local", "slurm"):
        raise UsageError(f"--backend must be local or slurm, got {cfg.backend!r}")
    if cfg.max_jobs_run is not None and cfg.max_jobs_run < 1:
        raise UsageError(f"--max_jobs_run must be >= 1, got {cfg.max_jobs_run}")
    rest = argv[i:]
    var, first, last = "JOB", 1, 1
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?", rest[0]) if rest else None
    if m:
        var, first = m.group(1), int(m.group(2))
        last = int(m.group(3)) if m.group(3) is not None else first
        if last < first:
            raise UsageError(f"empty job range {rest[0]}")
        rest = rest[1:]
    if len(rest) < 2:
        raise UsageError("usage: run.py [options] [JOB=1:N] <log file> <command> [args...]")
    log_template, words = rest[0], rest[1:]
    if last > first and var not in log_template:
        raise UsageError(
            f"{last - first + 1} jobs would share one log file {log_template}; put {var} in its name"
        )
    return cfg, JobSpec(var, first, last, log_template, join_command(words))


def header(cmd: str) -> str:
    return f"# {cmd}\n# Running on {socket.gethostname()}\n# Started at {time.ctime()}\n"


def footer(seconds: float, threads: int, code: int) -> str:
    return f"# Accounting: time={int(round(seconds))} threads={threads}\n# Ended (code {code}) at {time.ctime()}\n"


def report(spec: JobSpec, failed: dict[int, str]) -> int:
    """Print the failed jobs (and why, if not an exit code) to stderr; the runner's exit status."""
    if not failed:
        return 0
    n = len(spec.jobs())
    if n == 1:
        job = next(iter(failed))
        print(f"{PROG}: job failed ({failed[job]}), log is in {spec.log(job)}", file=sys.stderr)
    else:
        listed = ", ".join(f"{j} ({spec.log(j)})" for j in sorted(failed))
        print(f"{PROG}: {len(failed)} / {n} jobs failed: {listed}", file=sys.stderr)
    return 1


def exit_code(status: int) -> int:
    """A wait status as a shell exit code (128+signal for a killed process)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def kill_groups(procs: dict[int, subprocess.Popen]) -> None:
    """SIGTERM each job's process group, SIGKILL what is left after a grace period, reap all."""
    for p in procs.values():
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_GRACE_S
    for p in procs.values():
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also the group's other members
        except ProcessLookupError:
            pass
        p.wait()


def rotate_log(log: Path, keep: int = 5) -> None:
    """An existing ``log`` becomes ``log.1`` (``log.1`` -> ``log.2`` ...; ``keep`` old ones): a re-run
    never truncates the log of an earlier (perhaps killed) run."""
    if not log.exists():
        return
    for i in range(keep - 1, 0, -1):
        old = log.with_name(f"{log.name}.{i}")
        if old.exists():
            os.replace(old, log.with_name(f"{log.name}.{i + 1}"))
    os.replace(log, log.with_name(f"{log.name}.1"))


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the runner dies, however it dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# The job's bash runs the command in the background and waits, so that a SIGTERM (sent by us,
# or by the kernel when the runner dies: _die_with_parent) is handled at once and ends the
# job's whole process group, not just bash.
JOB_WRAPPER = 'trap "trap - TERM; kill -TERM 0" TERM; ( {cmd} ) & wait $!'


def run_local(cfg: RunnerConfig, spec: JobSpec) -> int:
    """Run the jobs here, at most ``max_jobs_run`` at once; the runner's exit status."""
    max_jobs = cfg.max_jobs_run or os.cpu_count() or 1
    pending = list(spec.jobs())
    running: dict[int, tuple[int, subprocess.Popen, float]] = {}  # pid -> (job, proc, start)
    failed: dict[int, str] = {}
    try:
        while pending or running:
            while pending and len(running) < max_jobs:
                job = pending.pop(0)
                log, cmd = Path(spec.log(job)), spec.cmd(job)
                try:
                    log.parent.mkdir(parents=True, exist_ok=True)
                    rotate_log(log)
                    with open(log, "w", encoding="utf-8") as f:
                        f.write(header(cmd))
                        f.flush()
                        # Own session (so its own process group): we can kill the whole job tree.
                        proc = subprocess.Popen(
                            ["bash", "-o", "pipefail", "-c", JOB_WRAPPER.format(cmd=cmd)],
                            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent,
                        )
                except OSError as e:
                    print(f"{PROG}: job {job} not started: {e}", file=sys.stderr)
                    failed[job] = f"not started: {e}"
                    continue
                running[proc.pid] = (job, proc, time.monotonic())
            if not running:
                continue
            # os.wait reaps whichever job ends first; a signal handler's exception interrupts it.
            pid, status = _Signals.wait(os.wait)
            if pid not in running:
                continue
            job, proc, start = running.pop(pid)
            proc.returncode = code = exit_code(status)
            with open(spec.log(job), "a", encoding="utf-8") as f:
                f.write(footer(time.monotonic() - start, cfg.num_threads, code))
            if code != 0:
                failed[job] = f"exit code {code}"
    except Stopped as e:
        kill_groups({pid: p for pid, (_, p, _) in running.items()})
        for pid, (job, proc, start) in running.items():
            with open(spec.log(job), "a", encoding="utf-8") as f:
                f.write(f"# Killed by {PROG} on {signal.Signals(e.signum).name}\n")
                rc = proc.returncode
                code = 128 - rc if rc is not None and rc < 0 else (rc if rc is not None else 128 + e.signum)
                f.write(footer(time.monotonic() - start, cfg.num_threads, code))
        print(f"{PROG}: stopped by {signal.Signals(e.signum).name}; killed {len(running)} running job(s)",
              file=sys.stderr)
        return 128 + e.signum
    return report(spec, failed)


SLURM_SCRIPT = """#!/usr/bin/env bash
# Written by utils/run.py: {n} array task(s) of
#   {command}
# Submitted with: {sbatch}
#SBATCH --job-name={name}
#SBATCH --array={array}
#SBATCH --output={slurm_out}
{extra}cd {cwd}
task=${{SLURM_ARRAY_TASK_ID:?run.py: SLURM_ARRAY_TASK_ID not set}}
template={cmd_q}
log_template={log_q}
cmd=${{template//{var}/$task}}
log=${{log_template//{var}/$task}}
status={qdir_q}/{stem_q}.$task.status
mkdir -p "$(dirname "$log")" "$(dirname "$status")"
{{ echo "# $cmd"; echo "# Running on $(hostname)"; echo "# Started at $(date)"; }} > "$log"
t0=$(date +%s)
bash -o pipefail -c "$cmd" >> "$log" 2>&1
ret=$?
t1=$(date +%s)
echo "# Accounting: time=$((t1 - t0)) threads={threads}" >> "$log"
echo "# Ended (code $ret) at $(date)" >> "$log"
echo "$ret" > "$status.tmp" && mv "$status.tmp" "$status"
exit "$ret"
"""


def slurm_paths(spec: JobSpec) -> tuple[Path, str]:
    """The queue dir (``<log dir>/q``, as Kaldi's slurm.pl) and the stem of the script's files.

    The script is ``q/<stem>.sh``; task t writes its exit code to ``q/<stem>.<t>.status``.
    """
    log0 = Path(spec.log_template)
    stem = log0.name.replace(spec.var, "JOB")
    stem = stem[: -len(".log")] if stem.endswith(".log") else stem
    return log0.parent / "q", stem


def status_path(spec: JobSpec, task: int) -> Path:
    qdir, stem = slurm_paths(spec)
    return qdir / f"{stem}.{task}.status"


def write_slurm_script(cfg: RunnerConfig, spec: JobSpec) -> tuple[Path, list[str]]:
    """Write the sbatch array script; returns its path and the sbatch command line."""
    qdir, stem = slurm_paths(spec)
    script = qdir / f"{stem}.sh"
    array = f"{spec.first}-{spec.last}" + (f"%{cfg.max_jobs_run}" if cfg.max_jobs_run else "")
    extra = [f"#SBATCH --cpus-per-task={cfg.num_threads}"] if cfg.num_threads > 1 else []
    if cfg.gpu > 0:
        extra.append(f"#SBATCH --gres=gpu:{cfg.gpu}")
    if cfg.mem:
        extra.append(f"#SBATCH --mem={cfg.mem}")
    sbatch = ["sbatch", "--wait", "--parsable", *shlex.split(cfg.slurm_opts), str(script)]
    # Slurm's own output of each task (the job log is written by the script itself).
    slurm_out = qdir / f"{stem}.%a.out"
    text = SLURM_SCRIPT.format(
        n=len(spec.jobs()), command=spec.command.replace("\n", " "), sbatch=" ".join(map(shlex.quote, sbatch)),
        name=shlex.quote(stem), array=array, slurm_out=slurm_out.absolute(),
        extra="".join(x + "\n" for x in extra), cwd=shlex.quote(os.getcwd()),
        cmd_q=shlex.quote(spec.command), log_q=shlex.quote(spec.log_template), var=spec.var,
        qdir_q=shlex.quote(str(qdir)), stem_q=shlex.quote(stem), threads=cfg.num_threads,
    )
    atomic_write_text(script, text)
    script.chmod(0o755)
    return script, sbatch


def run_slurm(cfg: RunnerConfig, spec: JobSpec) -> int:
    """Submit one sbatch array job, wait for it, check each task's status file."""
    script, sbatch = write_slurm_script(cfg, spec)
    for job in spec.jobs():
        status_path(spec, job).unlink(missing_ok=True)
    job_id = ""
    try:
        proc = subprocess.Popen(sbatch, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    except FileNotFoundError:
        print(f"{PROG}: sbatch not found on PATH (needed by --backend slurm)", file=sys.stderr)
        return 1
    try:
        assert proc.stdout is not None
        while True:  # --parsable: the job id first; --wait: sbatch returns when all tasks end
            line = _Signals.wait(proc.stdout.readline)
            if not line:
                break
            if not job_id and line.strip():
                job_id = line.strip().split(";")[0]
        rc = _Signals.wait(proc.wait)
    except Stopped as e:
        if job_id:
            subprocess.run(["scancel", job_id], check=False)
        proc.terminate()
        proc.wait()
        print(f"{PROG}: stopped by {signal.Signals(e.signum).name}; cancelled slurm job {job_id or '(not yet submitted)'}",
              file=sys.stderr)
        return 128 + e.signum
    failed: dict[int, str] = {}
    for job in spec.jobs():
        status = status_path(spec, job)
        try:
            code = int(status.read_text().strip())
        except (FileNotFoundError, ValueError):
            failed[job] = f"no exit status in {status}; task killed or never ran (sbatch exit {rc})"
            continue
        if code != 0:
            failed[job] = f"exit code {code}"
    if failed and not job_id:
        print(f"{PROG}: sbatch failed (exit {rc}): {' '.join(sbatch)}", file=sys.stderr)
    return report(spec, failed)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    try:
        cfg, spec = parse_args(argv)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _Signals.handler)
    signal.signal(signal.SIGTERM, _Signals.handler)
    signal.signal(signal.SIGHUP, _Signals.handler)  # a closed terminal stops the jobs too
    return run_slurm(cfg, spec) if cfg.backend == "slurm" else run_local(cfg, spec)


if __name__ == "__main__":
    sys.exit(main())
