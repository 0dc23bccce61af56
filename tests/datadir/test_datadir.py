"""justkit.datadir.validate: each inconsistency is reported (file + id), fix_data_dir repairs it; datadir tables."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from justkit.datadir.tables import DataDirError, read_table, write_table
from justkit.datadir.validate import DataDirInvalid, assert_valid_data_dir, fix_data_dir, validate_data_dir

UTTS = {
    "spkA-u1": ("spkA", "en", "hello world", "1.5"),
    "spkA-u2": ("spkA", "en", "good morning", "2.0"),
    "spkB-u1": ("spkB", "pl", "dzień dobry", "0.75"),
    "spkB-u2": ("spkB", "pl", "do widzenia", "3.25"),
}


def make_dir(d: Path, audio: bool = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = {"wav.scp": [], "text": [], "utt2spk": [], "utt2lang": [], "utt2dur": []}
    for u, (spk, lang, text, dur) in sorted(UTTS.items()):
        wav = d / "audio" / f"{u}.flac"
        if audio:
            wav.parent.mkdir(exist_ok=True)
            wav.write_bytes(b"fLaC")
        lines["wav.scp"].append(f"{u} {wav}")
        lines["text"].append(f"{u} {text}")
        lines["utt2spk"].append(f"{u} {spk}")
        lines["utt2lang"].append(f"{u} {lang}")
        lines["utt2dur"].append(f"{u} {dur}")
    for name, ls in lines.items():
        (d / name).write_text("\n".join(ls) + "\n", encoding="utf-8")
    (d / "spk2utt").write_text("spkA spkA-u1 spkA-u2\nspkB spkB-u1 spkB-u2\n")
    return d


def edit(path: Path, fn) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(fn(lines)) + "\n", encoding="utf-8")


def drop_line(path: Path, utt: str) -> None:
    edit(path, lambda ls: [l for l in ls if l.split()[0] != utt])


def one(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert len(hits) == 1, f"expected one problem with {needles}, got {problems}"
    return hits[0]


def test_valid_dir_has_no_problems(tmp_path):
    d = make_dir(tmp_path / "d", audio=True)
    assert validate_data_dir(d, check_audio=True) == []
    assert_valid_data_dir(d)


def test_missing_ids_named_per_file(tmp_path):
    d = make_dir(tmp_path / "d")
    drop_line(d / "text", "spkA-u2")
    drop_line(d / "utt2lang", "spkB-u1")
    drop_line(d / "utt2dur", "spkB-u1")
    probs = validate_data_dir(d)
    msg = one(probs, f"{d}/text:", "missing")
    assert "spkA-u2" in msg and "spkB-u1" not in msg and "wav.scp" in msg
    assert "spkB-u1" in one(probs, f"{d}/utt2lang:", "missing")
    assert "spkB-u1" in one(probs, f"{d}/utt2dur:", "missing")
    assert len(probs) == 3
    res = fix_data_dir(d)
    assert res["kept"] == 2
    assert res["dropped"] == {"spkA-u2": "missing in text", "spkB-u1": "missing in utt2lang, utt2dur"}
    assert validate_data_dir(d) == []
    assert read_table(d / "spk2utt") == {"spkA": "spkA-u1", "spkB": "spkB-u2"}


def test_missing_required_file(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "utt2lang").unlink()
    assert validate_data_dir(d) == [f"{d}/utt2lang: file not found (required)"]
    assert validate_data_dir(d, require=("wav.scp", "text")) == []


def test_unsorted_and_duplicate(tmp_path):
    d = make_dir(tmp_path / "d")
    edit(d / "utt2spk", lambda ls: [ls[1], ls[0], *ls[2:]])
    edit(d / "text", lambda ls: [*ls, "spkB-u2 again"])
    probs = validate_data_dir(d)
    assert "not sorted" in one(probs, f"{d}/utt2spk:2:", "spkA-u1")
    assert "duplicated" in one(probs, f"{d}/text:5:", "spkB-u2")
    res = fix_data_dir(d)
    assert res["dropped"] == {"spkB-u2": "duplicated in text"}
    assert validate_data_dir(d) == []
    assert (d / "utt2spk").read_text().splitlines()[0] == "spkA-u1 spkA"


def test_sort_order_is_bytes_not_locale(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    write_table(d / "x", {"b": "1", "B": "2", "a_1": "3", "a-1": "4", "ä": "5"})
    assert [l.split()[0] for l in (d / "x").read_text().splitlines()] == ["B", "a-1", "a_1", "b", "ä"]


def test_spk2utt_inconsistent_both_ways(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "spk2utt").write_text("spkA spkA-u1 spkB-u1\nspkB spkB-u2 ghost\n")
    probs = validate_data_dir(d)
    assert "utt2spk maps it to spkB" in one(probs, f"{d}/spk2utt:", "spkB-u1", "spkA lists")
    assert "not in utt2spk" in one(probs, f"{d}/spk2utt:", "ghost")
    assert "does not list" in one(probs, f"{d}/spk2utt:", "spkA-u2")
    (d / "spk2utt").write_text("spkA spkA-u1 spkA-u2\n")
    probs = validate_data_dir(d)
    assert "speaker spkB of utt spkB-u1" in one(probs, "spkB-u1")
    fix_data_dir(d)
    assert validate_data_dir(d) == []
    assert (d / ".backup" / "spk2utt").read_text() == "spkA spkA-u1 spkA-u2\n"


def test_bad_values_lang_empty_text_duration(tmp_path):
    d = make_dir(tmp_path / "d")
    edit(d / "utt2lang", lambda ls: [l.replace("spkA-u2 en", "spkA-u2 English") for l in ls])
    edit(d / "text", lambda ls: [l.split()[0] if l.startswith("spkB-u1") else l for l in ls])
    edit(d / "utt2dur", lambda ls: [l.replace("3.25", "-1") for l in ls])
    probs = validate_data_dir(d)
    assert "'English' is not a language code" in one(probs, f"{d}/utt2lang:2:", "spkA-u2")
    assert "empty transcript" in one(probs, f"{d}/text:3:", "spkB-u1")
    assert "not a positive number" in one(probs, f"{d}/utt2dur:4:", "spkB-u2")
    assert len(probs) == 3
    # Any ISO code passes unless the recipe lists its languages (asr.sh: --known_langs "$langs")
    edit(d / "utt2lang", lambda ls: [l.replace("spkA-u2 English", "spkA-u2 sv") for l in ls])
    assert len(validate_data_dir(d)) == 2
    assert "unknown language code 'sv'" in one(validate_data_dir(d, known_langs=["en", "de"]), "spkA-u2")
    edit(d / "utt2lang", lambda ls: [l.replace("spkA-u2 sv", "spkA-u2 English") for l in ls])
    res = fix_data_dir(d)
    assert set(res["dropped"]) == {"spkA-u2", "spkB-u1", "spkB-u2"}
    assert "empty transcript in text" in res["dropped"]["spkB-u1"]
    assert validate_data_dir(d) == []


def test_non_utf8_line_reported_and_dropped(tmp_path):
    d = make_dir(tmp_path / "d")
    raw = (d / "text").read_bytes().replace("dzień".encode(), b"dzie\xf1")
    (d / "text").write_bytes(raw)
    probs = validate_data_dir(d)
    assert "not valid UTF-8" in one(probs, f"{d}/text:3:", "spkB-u1")
    with pytest.raises(DataDirError, match=r"text:3: id spkB-u1: not valid UTF-8"):
        read_table(d / "text")
    res = fix_data_dir(d)
    assert res["dropped"] == {"spkB-u1": "not valid UTF-8 in text"}
    assert validate_data_dir(d) == []
    assert (d / ".backup" / "text").read_bytes() == raw  # the old table is kept byte for byte


def test_check_audio(tmp_path):
    d = make_dir(tmp_path / "d", audio=True)
    (d / "audio" / "spkA-u1.flac").unlink()
    assert validate_data_dir(d) == []
    msg = one(validate_data_dir(d, check_audio=True), f"{d}/wav.scp", "spkA-u1")
    assert "audio file not found" in msg


def test_fix_drop_utts_with_reasons_and_optional_tables(tmp_path):
    d = make_dir(tmp_path / "d")
    (d / "feats.scp").write_text("spkA-u1 f.ark:10\nspkA-u2 f.ark:20\nspkB-u2 f.ark:30\n")
    (d / "utt2num_frames").write_text("spkA-u1 150\nspkA-u2 0\nspkB-u1 75\nspkB-u2 325\n")
    probs = validate_data_dir(d)
    assert "spkB-u1" in one(probs, f"{d}/feats.scp:", "missing")
    assert "not a positive integer" in one(probs, f"{d}/utt2num_frames:2:", "spkA-u2")
    res = fix_data_dir(d, drop_utts={"spkA-u1": "too long"})
    assert res == {"kept": 1, "dropped": {
        "spkA-u1": "dropped by caller: too long",
        "spkA-u2": "frame count '0' is not a positive integer in utt2num_frames",
        "spkB-u1": "missing in feats.scp"}}
    assert validate_data_dir(d) == []
    assert fix_data_dir(d, drop_utts=["nope"]) == {"kept": 1, "dropped": {}}
    assert list(read_table(d / "feats.scp")) == ["spkB-u2"]


def test_fix_refuses_to_empty_the_dir(tmp_path):
    d = make_dir(tmp_path / "d")
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    with pytest.raises(DataDirInvalid, match="no utterance"):
        fix_data_dir(d, drop_utts=list(UTTS))
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


def test_assert_valid_lists_problems(tmp_path):
    d = make_dir(tmp_path / "d")
    drop_line(d / "text", "spkA-u1")
    with pytest.raises(DataDirInvalid) as e:
        assert_valid_data_dir(d)
    assert len(e.value.problems) == 1 and "spkA-u1" in str(e.value)


# ---------------------------------------------------------------- streaming tables, subset, combine


def test_iter_table_streams_lines_as_before(tmp_path):
    from justkit.datadir.tables import iter_table

    p = tmp_path / "t"
    p.write_bytes(b"a 1\r\n\n  \nb  two words \nc \xff\nd\n")
    rows = [(t.lineno, t.key, t.value, t.error is not None) for t in iter_table(p)]
    assert rows == [(1, "a", "1", False), (4, "b", "two words", False), (5, "c", "", True), (6, "d", "", False)]
    with pytest.raises(DataDirError, match="file not found"):
        list(iter_table(tmp_path / "nope"))


def test_write_sorted_table_and_spk2utt_stream(tmp_path):
    from justkit.datadir.tables import write_sorted_table, write_spk2utt

    assert write_sorted_table(tmp_path / "t", [("a", "1"), ("b", "")]) == 2
    assert (tmp_path / "t").read_text() == "a 1\nb\n"
    for rows, what in (([("b", "1"), ("a", "2")], "not sorted"), ([("a", "1"), ("a", "2")], "duplicated")):
        with pytest.raises(DataDirError, match=f"id a: {what}"):
            write_sorted_table(tmp_path / "t", rows)
        assert (tmp_path / "t").read_text() == "a 1\nb\n"  # untouched
    # speakers contiguous: one pass; interleaved speakers (any Kaldi dir): the dict fallback
    for rows in (["a1 A", "a2 A", "b1 B"], ["u1 B", "u2 A", "u3 B"]):
        (tmp_path / "utt2spk").write_text("\n".join(rows) + "\n")
        write_spk2utt(tmp_path / "spk2utt", tmp_path / "utt2spk")
        expect = {}
        for r in rows:
            u, s = r.split()
            expect.setdefault(s, []).append(u)
        assert read_table(tmp_path / "spk2utt") == {s: " ".join(us) for s, us in sorted(expect.items())}


def test_combine_streaming_and_unsorted_fallback_agree(tmp_path):
    from justkit.datadir.combine import combine_data_dirs

    a = make_dir(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "utt2lang", "utt2dur"):
        (b / name).write_text("".join(f"spkC-u{i} {v}\n" for i, v in enumerate(
            {"wav.scp": ["/x/1.flac", "/x/2.flac"], "text": ["one", "two"], "utt2spk": ["spkC", "spkC"],
             "utt2lang": ["de", "de"], "utt2dur": ["1.0", "2.0"]}[name])))
    (b / "spk2utt").write_text("spkC spkC-u0 spkC-u1\n")
    assert combine_data_dirs(tmp_path / "s", [b, a]) == 6
    s = {f.name: f.read_bytes() for f in (tmp_path / "s").iterdir()}
    assert validate_data_dir(tmp_path / "s") == []
    edit(b / "text", lambda ls: ls[::-1])  # unsorted source: combined in memory, same result
    assert combine_data_dirs(tmp_path / "u", [b, a]) == 6
    assert {f.name: f.read_bytes() for f in (tmp_path / "u").iterdir()} == s
    edit(a / "utt2lang", lambda ls: ls + [ls[-1]])  # a repeated id in one source: an error, nothing written
    with pytest.raises(DataDirError, match=r"utt2lang:5: id spkB-u2: duplicated"):
        combine_data_dirs(tmp_path / "s", [b, a])
    assert {f.name: f.read_bytes() for f in (tmp_path / "s").iterdir()} == s


def test_subset_reads_only_the_kept_rows(tmp_path):
    from justkit.datadir.subset import subset_data_dir

    d = make_dir(tmp_path / "d")
    edit(d / "utt2dur", lambda ls: ls + [ls[0]])  # spkA-u1 twice: harmless unless it is kept
    assert subset_data_dir(d, tmp_path / "s", ["spkB-u2", "spkA-u2"]) == 2
    assert read_table(tmp_path / "s" / "spk2utt") == {"spkA": "spkA-u2", "spkB": "spkB-u2"}
    assert validate_data_dir(tmp_path / "s") == []
    with pytest.raises(DataDirError, match=r"utt2dur:5: id spkA-u1: duplicated"):
        subset_data_dir(d, tmp_path / "s2", ["spkA-u1"])


def test_valid_sorted_dir_is_validated_streaming(tmp_path, monkeypatch):
    """A valid dir is recognised without reading its tables into dicts; any problem (or a layout
    the streaming pass does not follow) falls back to the full report."""
    import justkit.datadir.validate as v

    d = make_dir(tmp_path / "d")
    (d / "spk2gender").write_text("spkA f\nspkB m\n")
    real_scan = v._scan
    monkeypatch.setattr(v, "_scan", lambda *a: pytest.fail("tables read into memory"))
    assert validate_data_dir(d, require=("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2dur")) == []
    monkeypatch.setattr(v, "_scan", real_scan)
    # Valid, but speakers interleaved (ids not speaker-prefixed): the dict path says valid too.
    g = tmp_path / "g"
    g.mkdir()
    for name, rows in {"wav.scp": ["u1 /a", "u2 /b", "u3 /c"], "text": ["u1 a", "u2 b", "u3 c"],
                       "utt2spk": ["u1 s2", "u2 s1", "u3 s2"], "utt2lang": ["u1 en", "u2 en", "u3 en"],
                       "spk2utt": ["s1 u2", "s2 u1 u3"]}.items():
        (g / name).write_text("\n".join(rows) + "\n")
    assert validate_data_dir(g) == []
    for broken, needle in ((lambda: edit(d / "spk2utt", lambda ls: ls[:1]), "spk2utt: speaker spkB of utt spkB-u1"),
                           (lambda: edit(d / "spk2gender", lambda ls: ls[::-1]), "spk2gender:2: id spkA: not sorted")):
        shutil.copytree(d, tmp_path / "x")
        d, keep = tmp_path / "x", d
        broken()
        assert any(needle in p for p in validate_data_dir(d)), validate_data_dir(d)
        shutil.rmtree(d)
        d = keep


def test_job_tables_merge_streaming_and_unsorted_fallback(tmp_path):
    """Stages 2-3 merge their jobs' sorted outputs as a k-way merge (no dict of the set); an
    unsorted job output still merges (through a dict); an id from two jobs is an error."""
    from justkit.datadir.jobs import write_merged_job_table

    (tmp_path / "t.1").write_text("a 1\nc 3\ne 5\n")
    (tmp_path / "t.2").write_text("b 2\nd 4\n")
    assert write_merged_job_table(tmp_path / "out", str(tmp_path / "t.JOB"), 2) == (5, "1")
    assert (tmp_path / "out").read_text() == "a 1\nb 2\nc 3\nd 4\ne 5\n"
    (tmp_path / "t.2").write_text("d 4\nb 2\n")  # unsorted: the dict path sorts it
    assert write_merged_job_table(tmp_path / "out2", str(tmp_path / "t.JOB"), 2)[0] == 5
    assert (tmp_path / "out2").read_text() == "a 1\nb 2\nc 3\nd 4\ne 5\n"
    (tmp_path / "t.2").write_text("b 2\nc 9\n")
    with pytest.raises(DataDirError, match=r"t\.2: utterance c also produced by an earlier job"):
        write_merged_job_table(tmp_path / "out3", str(tmp_path / "t.JOB"), 2)
    assert not (tmp_path / "out3").exists()
    with pytest.raises(DataDirError, match=r"t\.3: output of job 3 not found"):
        write_merged_job_table(tmp_path / "out4", str(tmp_path / "t.JOB"), 3)


def test_fix_streams_sorted_dirs_and_matches_the_dict_path(tmp_path):
    """fix_data_dir walks a sorted dir's tables together; an unsorted dir takes the dict path;
    both give the same kept/dropped and the same files."""
    a, b = make_dir(tmp_path / "a"), make_dir(tmp_path / "b")
    for d in (a, b):
        drop_line(d / "text", "spkA-u2")
    lines = (b / "utt2dur").read_text().splitlines()
    (b / "utt2dur").write_text("\n".join(reversed(lines)) + "\n")  # unsorted: the dict path
    ra, rb = fix_data_dir(a, drop_utts={"spkB-u1": "bad audio"}), fix_data_dir(b, drop_utts={"spkB-u1": "bad audio"})
    assert ra == rb and ra["kept"] == 2
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2dur"):
        assert (a / name).read_text().replace(f"{a}/", "") == (b / name).read_text().replace(f"{b}/", ""), name
    assert not list(a.glob(".*.tmp"))
