"""The base of every error justkit reports to a user (bad input, bad config), as opposed to a bug."""
from __future__ import annotations


class JustkitError(Exception):
    """A problem with the user's input, files or configuration.

    The message is one line that names the file, utterance id or config key at fault.
    Every ``justkit.bin`` command prints it as one log line and exits with status 2
    (``justkit.cli.run``); any other exception is a bug and keeps its traceback.
    Subclasses also derive from the builtin they used to be (``ValueError``, ...), so
    existing ``except ValueError`` code keeps working.
    """
