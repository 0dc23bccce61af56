"""WER/CER against hand-counted cases, sclite reports, RESULTS.md and the paper table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from justkit.bin.paper_table import main as paper_main
from justkit.bin.score import main as score_main
from justkit.score.paper import experiment_row, format_paper_table, load_paper
from justkit.score.results import score_experiment
from justkit.score.wer import ScoringError, format_sclite, score_decode_dir, score_tables


def _score(refs, hyps, lang="en"):
    return score_tables(refs, hyps, {u: lang for u in refs})


def test_hand_counted_sub_ins_del():
    # ref: a b c d e f / hyp: a x c e f g -> b->x (S), d (D), g (I): 3 errors / 6 words
    # (the only 3-edit alignment; all-substitutions from b on would take 4)
    r = _score({"u1": "a b c d e f"}, {"u1": "a x c e f g"})
    u = r.utts[0]
    assert (u.sub, u.dels, u.ins, u.hits) == (1, 1, 1, 4)
    assert r.wer == pytest.approx(50.0)
    assert u.alignment == [("C", "a", "a"), ("S", "b", "x"), ("C", "c", "c"), ("D", "d", None),
                           ("C", "e", "e"), ("C", "f", "f"), ("I", None, "g")]
    # CER: both 11 characters, 4 differ in place (b/x d/e e/f f/g): 4 substitutions
    assert u.char_errors == 4 and u.char_ref == 11
    assert r.cer == pytest.approx(100 * 4 / 11)


def test_totals_over_utterances_and_normalisation():
    # Case, punctuation and typographic apostrophes are normalised away on both sides.
    r = _score({"a": "The cat, sat.", "b": "l'homme est là", "c": "one two"},
               {"a": "the CAT sat", "b": "l’homme est la", "c": "one two three four"}, lang="fr")
    assert [x.errors for x in r.utts] == [0, 1, 2]
    assert r.wer == pytest.approx(100 * 3 / 8)
    assert r.ser == pytest.approx(100 * 2 / 3)


def test_empty_hypothesis_is_all_deletions():
    r = _score({"u": "one two three"}, {"u": ""})
    u = r.utts[0]
    assert (u.sub, u.dels, u.ins) == (0, 3, 0) and r.wer == 100.0
    assert u.char_errors == len("one two three")
    # punctuation only -> empty after normalisation: deletions too
    assert _score({"u": "one"}, {"u": "?!"}).utts[0].dels == 1


def test_empty_reference_rejected():
    with pytest.raises(ScoringError, match=r"ref\.txt: utterance u2: empty reference"):
        _score({"u1": "a", "u2": ""}, {"u1": "a", "u2": "b"})
    with pytest.raises(ScoringError, match="u3.*empty after normalisation"):
        _score({"u3": "..."}, {"u3": "b"})


def test_missing_and_extra_hypothesis_ids():
    with pytest.raises(ScoringError, match=r"hyp\.txt: no hypothesis for utterance u2"):
        _score({"u1": "a", "u2": "b"}, {"u1": "a"})
    with pytest.raises(ScoringError, match=r"hyp\.txt: utterance zz is not in ref\.txt"):
        _score({"u1": "a"}, {"u1": "a", "zz": "b"})


def test_code_switched_normalisation():
    # One shared normalisation with the l1-l2 code: Dutch clitic kept when either side is Dutch.
    r = score_tables({"cs": "Hello World 't Huis"}, {"cs": "hello world 't huis"}, {"cs": "en-nl"})
    assert r.utts[0].errors == 0 and r.utts[0].ref == ["hello", "world", "'t", "huis"]


def test_sclite_report_content():
    r = _score({"u1": "a b c d e f", "u2": "x y"}, {"u1": "a x c e f g", "u2": "x y"})
    text = format_sclite(r, "decode_greedy_test_en")
    assert "%WER 37.50 [ 3 / 8, 1 ins, 1 del, 1 sub ]" in text
    assert "id: (u1)  lang: en\nScores: (#C #S #D #I) 4 1 1 1\n" in text
    assert "REF:  a B c D   e f ***\nHYP:  a X c *** e f G\nEval:   S   D       I\n" in text
    assert "REF:  x y\nHYP:  x y\n" in text
    for section, item in (("SUBSTITUTIONS", "b -> x"), ("INSERTIONS", "g"), ("DELETIONS", "d")):
        assert section in text and f"      1  {item}\n" in text


def _decode_dir(exp: Path, name: str, pairs: dict, langs: dict | None = None) -> Path:
    d = exp / name
    d.mkdir(parents=True)
    (d / "ref.txt").write_text("".join(f"{u} {r}\n" for u, (r, _) in sorted(pairs.items())))
    (d / "hyp.txt").write_text("".join(f"{u} {h}\n".replace(" \n", "\n") for u, (_, h) in sorted(pairs.items())))
    if langs:
        (d / "utt2lang").write_text("".join(f"{u} {lang}\n" for u, lang in sorted(langs.items())))
    (d / "rtf.txt").write_text("0.125\n")
    return d


def _fake_exp(root: Path, name: str, en_errors: int, pl_errors: int) -> Path:
    """An experiment with 10-word references: WER en = en_errors*10 %, pl = pl_errors*10 %."""
    exp = root / name
    ref = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    for method, extra in (("greedy", 1), ("beam", 0)):
        for lang, n in (("en", en_errors + extra), ("pl", pl_errors + extra)):
            hyp = " ".join(["x"] * n + ref.split()[n:])
            _decode_dir(exp, f"decode_{method}_test_{lang}", {f"{lang}1": (ref, hyp)})
        _decode_dir(exp, f"decode_{method}_test_cs", {"cs1": ("a b", "a c")}, {"cs1": "en-pl"})
    return exp


def test_results_md_table(tmp_path):
    exp = _fake_exp(tmp_path, "exp1", en_errors=2, pl_errors=4)
    res = score_experiment(exp)
    assert res["methods"]["beam"]["en"]["wer"] == pytest.approx(20.0)
    assert res["methods"]["greedy"]["pl"]["wer"] == pytest.approx(50.0)
    assert res["average"]["beam"]["wer"] == pytest.approx(30.0)      # cs is not averaged
    assert res["methods"]["beam"]["cs"]["wer"] == pytest.approx(50.0)
    md = (exp / "RESULTS.md").read_text()
    assert "| method | en | pl | avg | cs |" in md
    assert "| greedy | 30.00 | 50.00 | 40.00 | 50.00 |" in md
    assert "| beam | 20.00 | 40.00 | 30.00 | 50.00 |" in md
    assert md.index("| greedy |") < md.index("| beam |")
    assert "`w0 -> x`" in md and "0.1250" in md
    wer_txt = (exp / "decode_beam_test_en" / "wer.txt").read_text()
    assert wer_txt.startswith("%WER 20.00 [ 2 / 10, 0 ins, 0 del, 2 sub ]")
    assert "REF:  W0 W1 w2" in (exp / "decode_beam_test_en" / "sclite.txt").read_text()
    assert json.loads((exp / "results.json").read_text())["average"]["greedy"]["wer"] == pytest.approx(40.0)


def test_score_cli_errors_name_the_id(tmp_path, capsys):
    exp = tmp_path / "exp"
    _decode_dir(exp, "decode_greedy_test_en", {"u1": ("a b", "a b")})
    (exp / "decode_greedy_test_en" / "hyp.txt").write_text("u1 a b\nu9 c\n")
    assert score_main(["--exp", str(exp)]) == 2
    assert "hyp.txt: utterance u9 is not in" in capsys.readouterr().err
    assert score_main(["--exp", str(tmp_path / "none")]) == 2
    assert "none: experiment dir not found" in capsys.readouterr().err
    with pytest.raises(ScoringError, match="no utt2lang"):
        score_decode_dir(exp / "decode_greedy_test_en")


def test_paper_table_on_fake_experiments(tmp_path, capsys):
    exps = [_fake_exp(tmp_path, "a", 1, 3), _fake_exp(tmp_path, "b", 2, 2)]
    for e in exps:
        assert score_main(["--exp", str(e)]) == 0
    # A paper file with known numbers, to check the layout and the relative changes.
    langs = ["en", "de", "nl", "es", "fr", "pt", "it", "pl"]
    paper = {
        "paper": "test paper", "langs": langs,
        "systems": [
            {"id": "p1", "name": "P1", "wer": {l: 10.0 for l in langs}, "avg": 10.0, "source": "table 1"},
            {"id": "p2", "name": "P2", "wer": {"en": 40.0, "pl": None}, "avg": None, "source": "table 2"},
        ],
        "claims": [{"system": "p1", "versus": "p2", "relative_reduction": 50.0, "source": "abstract"}],
    }
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(paper))
    assert paper_main([str(e) for e in exps] + ["--paper", str(tmp_path / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| system | en | de | nl | es | fr | pt | it | pl | avg |" in out
    # sources are footnotes under the table, not cells
    assert "| P1 [1] | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 |" in out
    assert "| P2 [2] | 40.0 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in out
    assert "[1] table 1" in out and "[2] table 2" in out
    # a: beam en 10 %, pl 30 % -> avg 20 (over en pl); b: 20, 20 -> 20
    assert "| **a (beam)** [3] | 10.0 | n/a | n/a | n/a | n/a | n/a | n/a | 30.0 | 20.0 |" in out
    assert "[3] this experiment; its average is over en pl only" in out
    # vs P1 (mean over en, pl = 10): +100 %; vs P2: pl unknown -> n/a
    assert "| a (beam) | +100.0 | n/a |" in out and "| b (beam) | +100.0 | n/a |" in out
    assert "P1: average WER 50.0% (relative) below P2 (abstract)" in out
    # explicit method; unknown method and unscored experiment are clear errors
    assert experiment_row(exps[0], "greedy").avg == pytest.approx(30.0)
    assert paper_main([str(exps[0]), "--method", "viterbi"]) == 2
    assert paper_main([str(tmp_path / "unscored")]) == 2
    assert "run `python -m justkit.bin.score" in capsys.readouterr().err


def test_shipped_paper_yaml_is_sourced():
    """The shipped paper table loads; every row names its source; numbers are numbers or n/a."""
    paper = load_paper()
    assert paper["langs"] == ["en", "de", "nl", "es", "fr", "pt", "it", "pl"]
    names = [r.name for r in paper["rows"]]
    assert any("XLSR-53" in n for n in names) and any("JUST" in n for n in names)
    rows = {r.id: r for r in paper["rows"]}
    # the rows as quoted in BEST-RQ's MLS table and the XLSR paper's (docs/paper.md)
    assert rows["just"].wer == {"en": 6.5, "de": 4.1, "nl": 9.5, "es": 3.7, "fr": 5.2, "pt": 8.0, "it": 8.8, "pl": 6.6}
    assert rows["just"].avg == 6.5 and rows["w2vbert_from_just"].avg == 7.8
    assert rows["monolingual_5gram"].wer["pl"] == 20.39 and rows["xlsr53"].wer["en"] is None
    assert all(r.status for r in paper["rows"]) and all("arXiv" in r.source or "not found" in r.source
                                                      for r in paper["rows"])
    assert all(r.source for r in paper["rows"])
    text = format_paper_table(paper, [])
    assert text.count("\n| ") >= len(paper["rows"])


def test_system_table_mean_and_spread_over_seeds(tmp_path, capsys):
    from justkit.bin.system_table import main as table_main

    runs = {"sup": [_fake_exp(tmp_path, "sup_s0", 2, 6), _fake_exp(tmp_path, "sup_s1", 4, 8)],
            "just": [_fake_exp(tmp_path, "just_s0", 1, 3), _fake_exp(tmp_path, "just_s1", 1, 5)]}
    for exps in runs.values():
        for e in exps:
            assert score_main(["--exp", str(e), "--langs", "pl en"]) == 0
    groups = [f"{k}={','.join(map(str, v))}" for k, v in runs.items()]
    rc = table_main([*groups, "--langs", "en pl", "--out_md", str(tmp_path / "t.md"),
                     "--out_json", str(tmp_path / "t.json"), "--command", "x.sh", "--wall_s", "120"])
    assert rc == 0
    res = json.loads((tmp_path / "t.json").read_text())
    sup, just = res["systems"]["sup"], res["systems"]["just"]
    # beam: sup en 20/40 %, pl 60/80 % -> means 30, 70, sd 14.14; avg 40 and 60 -> 50 +- 14.14
    assert sup["wer"] == {"en": 30.0, "pl": 70.0} and sup["seeds"] == 2
    assert sup["wer_sd"]["en"] == pytest.approx(14.14, abs=0.01) and sup["avg"] == pytest.approx(50.0)
    assert just["avg"] == pytest.approx(25.0) and just["wer"]["pl"] == pytest.approx(40.0)
    md = (tmp_path / "t.md").read_text()
    assert "| sup | 2 | 30.0 ± 14.1 | 70.0 ± 14.1 | 50.0 ± 14.1 |" in md
    assert "| just | 2 | 10.0 ± 0.0 | 40.0 ± 14.1 | 25.0 ± 7.1 |" in md
    assert "| just | -66.7 | -42.9 | -50.0 |" in md  # relative to the first system
    assert "command: `x.sh`" in md and "wall time: 2 min" in md
    assert "Test WER (%), beam search;" in md  # the search the runs were read from (beam by default)
    assert table_main([*groups, "--method", "greedy", "--out_md", str(tmp_path / "g.md")]) == 0
    assert "Test WER (%), greedy search;" in (tmp_path / "g.md").read_text()
    assert table_main(["nonsense"]) == 2
