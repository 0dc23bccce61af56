"""utils/ scripts: split_scp, filter_scp, subset/combine/validate/fix data dirs, parse_options.sh."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from justkit.datadir.tables import read_table
from justkit.datadir.validate import validate_data_dir

ROOT = Path(__file__).resolve().parents[2]
UTILS = ROOT / "utils"
# As egs/*/path.sh does: the venv's python first on PATH, so `#!/usr/bin/env python3` finds it.
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def sh(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, input=stdin, capture_output=True, timeout=60)


def make_dir(d: Path, spk_utts: dict[str, int], lang: str = "en") -> Path:
    d.mkdir(parents=True)
    rows = [(f"{s}-{i:02d}", s) for s, n in spk_utts.items() for i in range(n)]
    rows.sort(key=lambda r: r[0].encode())
    tables = {
        "wav.scp": [f"{u} /audio/{u}.flac" for u, _ in rows],
        "text": [f"{u} words of {u}" for u, _ in rows],
        "utt2spk": [f"{u} {s}" for u, s in rows],
        "utt2lang": [f"{u} {lang}" for u, _ in rows],
        "utt2dur": [f"{u} {1 + len(u) / 10:.2f}" for u, _ in rows],
    }
    for name, lines in tables.items():
        (d / name).write_text("\n".join(lines) + "\n")
    spk2utt = {}
    for u, s in rows:
        spk2utt.setdefault(s, []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return d


def test_split_scp_balanced_contiguous(tmp_path):
    lines = [f"u{i:02d} v{i}\n" for i in range(10)]
    (tmp_path / "in.scp").write_text("".join(lines))
    outs = [tmp_path / f"out.{j}.scp" for j in (1, 2, 3)]
    r = sh(UTILS / "split_scp.py", "in.scp", *outs, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    parts = [o.read_text().splitlines(keepends=True) for o in outs]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sum(parts, []) == lines  # every line exactly once, in order
    r = sh(UTILS / "split_scp.py", "in.scp", *[tmp_path / f"o.{j}" for j in range(11)], cwd=tmp_path)
    assert r.returncode == 2 and b"cannot split 10 lines into 11 parts" in r.stderr


def test_split_scp_keeps_speakers_together(tmp_path):
    d = make_dir(tmp_path / "d", {"a": 5, "b": 1, "c": 2, "d": 4})
    outs = [tmp_path / f"wav.{j}.scp" for j in (1, 2, 3)]
    r = sh(UTILS / "split_scp.py", "--utt2spk", d / "utt2spk", d / "wav.scp", *outs, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    u2s = read_table(d / "utt2spk")
    spk_sets = [{u2s[line.split()[0]] for line in o.read_text().splitlines()} for o in outs]
    assert spk_sets == [{"a"}, {"b", "c"}, {"d"}]
    assert b"".join(o.read_bytes() for o in outs) == (d / "wav.scp").read_bytes()
    r = sh(UTILS / "split_scp.py", "--utt2spk", d / "utt2spk", d / "wav.scp",
           *[tmp_path / f"x.{j}" for j in range(5)], cwd=tmp_path)
    assert r.returncode == 2 and b"cannot split 4 speakers into 5 parts" in r.stderr
    (tmp_path / "bad.scp").write_text("a-00 x\nzz-1 y\n")
    r = sh(UTILS / "split_scp.py", "--utt2spk", d / "utt2spk", "bad.scp", "p1", "p2", cwd=tmp_path)
    assert r.returncode == 2 and b"bad.scp:2: id zz-1 not in" in r.stderr


def test_filter_scp_keep_and_exclude(tmp_path):
    (tmp_path / "in.scp").write_bytes(b"a 1\nb 2\nc \xff3\nd 4\n")  # bytes pass through unchanged
    (tmp_path / "ids").write_text("c extra\nb\nzz\n")
    r = sh(UTILS / "filter_scp.py", "ids", "in.scp", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == b"b 2\nc \xff3\n"
    r = sh(UTILS / "filter_scp.py", "--exclude", "ids", cwd=tmp_path, stdin=b"a 1\nb 2\nd 4\n")
    assert r.returncode == 0 and r.stdout == b"a 1\nd 4\n"
    r = sh(UTILS / "filter_scp.py", "-f", "2", "ids", cwd=tmp_path, stdin=b"x b\ny q\n")
    assert r.stdout == b"x b\n"


def test_subset_data_dir(tmp_path):
    src = make_dir(tmp_path / "src", {"a": 3, "b": 3})
    (tmp_path / "list").write_text("b-01\na-02 whatever\nnot-there\n")
    r = sh(UTILS / "subset_data_dir.py", "--utt_list", "list", src, tmp_path / "s1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"1 of 3 ids" in r.stderr and b"not-there" in r.stderr
    assert list(read_table(tmp_path / "s1/text")) == ["a-02", "b-01"]
    assert read_table(tmp_path / "s1/spk2utt") == {"a": "a-02", "b": "b-01"}
    assert validate_data_dir(tmp_path / "s1") == []

    r = sh(UTILS / "subset_data_dir.py", "--first", "4", src, tmp_path / "s2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(read_table(tmp_path / "s2/utt2dur")) == ["a-00", "a-01", "a-02", "b-00"]
    assert validate_data_dir(tmp_path / "s2") == []

    picks = []
    for out in ("r1", "r2"):
        r = sh(UTILS / "subset_data_dir.py", "--random", "3", "--seed", "7", src, tmp_path / out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        picks.append(list(read_table(tmp_path / out / "wav.scp")))
        assert validate_data_dir(tmp_path / out) == []
    assert picks[0] == picks[1] and len(picks[0]) == 3

    r = sh(UTILS / "subset_data_dir.py", "--first", "7", src, tmp_path / "s3", cwd=tmp_path)
    assert r.returncode == 2 and b"cannot take 7 utterances of 6" in r.stderr
    r = sh(UTILS / "subset_data_dir.py", "--first", "2", src, src, cwd=tmp_path)
    assert r.returncode == 2 and b"also a source" in r.stderr


def test_combine_data(tmp_path):
    en = make_dir(tmp_path / "en", {"en1": 2, "en2": 1}, "en")
    pl = make_dir(tmp_path / "pl", {"pl1": 2}, "pl")
    (pl / "utt2dur").unlink()  # not in every source: left out of the result, with a warning
    r = sh(UTILS / "combine_data.py", tmp_path / "all", en, pl, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"utt2dur left out" in r.stderr
    all_ = tmp_path / "all"
    assert read_table(all_ / "utt2lang") == {"en1-00": "en", "en1-01": "en", "en2-00": "en",
                                              "pl1-00": "pl", "pl1-01": "pl"}
    assert not (all_ / "utt2dur").exists()
    assert validate_data_dir(all_) == []

    dup = make_dir(tmp_path / "dup", {"pl1": 1}, "pl")
    before = (all_ / "text").read_bytes()
    r = sh(UTILS / "combine_data.py", all_, en, pl, dup, cwd=tmp_path)
    assert r.returncode == 2
    assert f"utterance id pl1-00 is in both {pl} and {dup}".encode() in r.stderr
    assert (all_ / "text").read_bytes() == before  # nothing written on error


def test_validate_and_fix_clis(tmp_path):
    d = make_dir(tmp_path / "d", {"a": 2, "b": 2})
    lines = (d / "utt2lang").read_text().splitlines()
    (d / "utt2lang").write_text("\n".join(lines[1:]) + "\n")
    r = sh(UTILS / "validate_data_dir.py", d, cwd=tmp_path)
    assert r.returncode == 2 and f"{d}/utt2lang: 1 utterance id(s) missing".encode() in r.stderr
    assert b"a-00" in r.stderr
    (tmp_path / "drop").write_text("b-01 too short\n")
    r = sh(UTILS / "fix_data_dir.py", "--drop_list", "drop", d, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"dropped a-00: missing in utt2lang" in r.stderr
    assert b"dropped b-01: dropped by caller: too short" in r.stderr
    r = sh(UTILS / "validate_data_dir.py", "--check_audio", "--require", "wav.scp,text", d, cwd=tmp_path)
    assert r.returncode == 2 and b"audio file not found: /audio/a-01.flac" in r.stderr
    r = sh(UTILS / "validate_data_dir.py", d, cwd=tmp_path)
    assert r.returncode == 0 and b"OK (2 utterances)" in r.stdout


PARSE_TEST = """\
stage=1
stop_stage=8
nj=2
langs="en de"
. {utils}/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage nj=$nj langs=$langs rest=$*"
"""


@pytest.fixture
def parse_script(tmp_path):
    s = tmp_path / "p.sh"
    s.write_text(PARSE_TEST.format(utils=UTILS))
    return s


def test_parse_options(parse_script, tmp_path):
    r = sh("bash", parse_script, "--stage", "3", "--nj=4", "--stop-stage", "5", "--langs", "en pl", "x", "y",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "stage=3 stop_stage=5 nj=4 langs=en pl rest=x y"


def test_parse_options_unknown_option(parse_script, tmp_path):
    r = sh("bash", parse_script, "--stage", "3", "--bogus", "1", cwd=tmp_path)
    assert r.returncode == 2
    assert b"unknown option --bogus" in r.stderr
    assert r.stdout == b""


def test_parse_options_keeps_a_name_option(tmp_path):
    # A script's own --name/--value options are not clobbered by the parser's loop variables
    # (local/paper_mini.sh --name X --stop_stage 2 once wrote data/token_stop_stage).
    s = tmp_path / "n.sh"
    s.write_text(f'name=default\nvalue=v0\nstage=1\n. {UTILS}/parse_options.sh\necho "$name $value $stage"\n')
    r = sh("bash", s, "--name", "lowlabel", "--value", "v1", "--stage", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "lowlabel v1 2"
    r = sh("bash", s, "--_po_name", "x", cwd=tmp_path)
    assert r.returncode == 2 and b"unknown option --_po_name" in r.stderr
