"""justkit.cli's help: every option's default shown once, none for an absent or empty one."""
from __future__ import annotations

from justkit import cli


def test_help_shows_each_default_once():
    p = cli.Parser("x", "a command")
    p.add_argument("inputs", nargs="*", help="files")
    p.add_argument("--out", default="", help="write here (default: stdout)")
    p.add_argument("--ctm", default="", help="times here")
    p.add_argument("--beam_size", type=int, default=4, help="beam width")
    p.add_argument("--model_dir", default=None, help="a model")
    text = " ".join(p.format_help().split())
    assert "(default: stdout)" in text and text.count("(default:") == 2
    assert "beam width (default: 4)" in text
    assert "(default: )" not in text and "(default: None)" not in text
