"""The package's import picture (tools/import_graph.py): no import circles, no import back up the layers."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod   # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


def test_justkit_has_no_import_circle_and_no_upward_import():
    p = _tool().picture(ROOT)
    assert p["modules"] > 50
    assert p["circles"] == []
    assert p["upward"] == [], "\n".join(f"{u['path']}:{u['line']} {u['src']} -> {u['dst']}: {u['why']}"
                                        for u in p["upward"])


def _write(root: Path, files: dict) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_tool_finds_circles_upward_imports_and_function_level_imports(tmp_path):
    g = _tool()
    _write(tmp_path, {
        "justkit/__init__.py": "",
        "justkit/nn/__init__.py": "",
        "justkit/models/__init__.py": "",
        "justkit/score/__init__.py": "",
        "justkit/decode/__init__.py": "",
        # a circle through a function-level import, and a relative import
        "justkit/nn/a.py": "def f():\n    from justkit.nn import b\n",
        "justkit/nn/b.py": "from . import a\n",
        # nn (layer below models) importing models: upward
        "justkit/nn/c.py": "import justkit.models.m\n",
        "justkit/models/m.py": "from justkit.nn.a import f\n",
        # score must not import models even though... it is also below them
        "justkit/score/s.py": "from justkit.models.m import x\n",
        # TYPE_CHECKING imports never run
        "justkit/decode/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from justkit.nn.zzz import q\n"
                               "    import justkit.bin.x\n",
        "justkit/decode/e.py": "import justkit.unplaced\n",
        "justkit/unplaced.py": "",
    })
    p = g.picture(tmp_path)
    assert p["circles"] == [["justkit.nn.a", "justkit.nn.b"]]
    up = {(u["src"], u["dst"]): u["why"] for u in p["upward"]}
    assert set(up) == {("justkit.nn.c", "justkit.models.m"), ("justkit.score.s", "justkit.models.m"),
                       ("justkit.decode.e", "justkit.unplaced")}
    assert "score must not import models" in up[("justkit.score.s", "justkit.models.m")]
    assert "no layer" in up[("justkit.decode.e", "justkit.unplaced")]
    assert p["in_function"] == 1
    assert not any(e["src"] == "justkit.decode.d" for e in p["edges"])


def test_cli_exit_status_and_picture(capsys):
    assert _tool().main([]) == 0
    out = capsys.readouterr().out
    assert "import circles: 0" in out and "upward imports: 0" in out
