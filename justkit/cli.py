"""What every ``justkit.bin`` command shares: its parser, config overrides, and how it ends.

The convention (docs/interfaces.md, "Command line"): options are spelled with underscores
(as in Kaldi and ESPnet); ``--help`` shows every option with its default; switches are
boolean flags (``--download`` / ``--no_download``); a command that reads a YAML config takes
overrides of it as ``--<section>.<key> VALUE`` (or ``--<section>.<key>=VALUE``); a problem
with the user's input or config ends the command with one log line and exit status 2;
tracebacks are left for bugs.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from typing import Callable, Optional, Sequence

from justkit.errors import JustkitError

EXIT_USER_ERROR = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help of every option, and descriptions printed as written. No
    "(default: ...)" where the help already says its default, nor for an empty or absent one
    (``(default: stdout) (default: )`` before)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, "", argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with justkit's conventions.

    ``overrides``: names of the YAML sections the command reads (e.g. ``("decode",)``); then
    ``--<section>.<key> VALUE`` words are collected apart (``parse``) and any other unknown
    option is an error naming it, as argparse does.
    """

    def __init__(self, prog: str, description: str, overrides: Sequence[str] = (), **kw) -> None:
        epilog = kw.pop("epilog", None)
        if overrides:
            names = ", ".join(f"--{s}.KEY VALUE" for s in overrides)
            note = f"Config overrides: {names} (nested keys with dots, e.g. --{overrides[0]}.a.b 3)."
            epilog = f"{epilog}\n{note}" if epilog else note
        super().__init__(prog=prog, description=description, epilog=epilog,
                         formatter_class=_Formatter, allow_abbrev=False, **kw)
        self.sections = tuple(overrides)

    def parse(self, argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, list[str]]:
        """(parsed options, override words ``--section.key value`` in order)."""
        argv = list(sys.argv[1:] if argv is None else argv)
        known, over = split_overrides(argv, self.sections)
        if over and not self.sections:
            self.error(f"unrecognized arguments: {' '.join(over)}")
        return self.parse_args(known), over


def split_overrides(argv: Sequence[str], sections: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--<section>.<key> VALUE`` / ``--<section>.<key>=VALUE`` words (``sections``)
    from the command's own arguments. An override of a section the command does not read
    is left to argparse, which reports it as an unknown option."""
    known: list[str] = []
    over: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else ""
        if "." in name and name.split(".", 1)[0] in sections:
            over.append(tok)
            if "=" not in tok:
                if i + 1 >= len(argv):
                    raise JustkitError(f"override {tok} has no value")
                over.append(argv[i + 1])
                i += 1
        else:
            known.append(tok)
        i += 1
    return known, over


class _BoolFlag(argparse.Action):
    """``--name`` sets True, ``--no_name`` sets False (argparse's own spells it ``--no-name``)."""

    def __init__(self, option_strings, dest, default=False, help=None, **kw):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add_bool(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """A boolean flag: ``--name`` / ``--no_name``."""
    p.add_argument(f"--{name}", f"--no_{name}", dest=name, action=_BoolFlag, default=default, help=help)


def run(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None,
        logger: Optional[logging.Logger] = None) -> int:
    """Call ``main(argv)``; a :class:`JustkitError` becomes one log line and exit status 2."""
    log = logger or logging.getLogger("justkit")
    try:
        rc = main(argv)
    except JustkitError as e:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
        log.error("%s", " ".join(str(e).split("\n")) if "\n" not in str(e).strip() else str(e))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return int(rc or 0)


def command(fn: Callable[[Optional[Sequence[str]]], Optional[int]]) -> Callable[[Optional[Sequence[str]]], int]:
    """Decorate a command's ``main(argv)`` so that it ends as :func:`run` says (exit status 2 and
    one log line for a :class:`JustkitError`), whether called from the shell or from Python."""

    @functools.wraps(fn)
    def wrapper(argv: Optional[Sequence[str]] = None) -> int:
        return run(fn, argv, logging.getLogger(fn.__module__ if fn.__module__ != "__main__" else "justkit"))

    return wrapper


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has; a JustkitError otherwise (before any work)."""
    import re

    d = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
        raise JustkitError(f"--device {d!r}: expected cpu, cuda or cuda:N")
    if d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise JustkitError(f"--device {d}: this machine has no CUDA device (torch sees none); use --device cpu")
        n = int(d.split(":")[1]) if ":" in d else 0
        if n >= torch.cuda.device_count():
            raise JustkitError(f"--device {d}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return d
