"""Exceptions with a meaning for the user.

``InputError`` is raised for anything the user can fix: a malformed file, a wrong shape, NaN values,
an unknown name, a parameter out of range. It subclasses ``ValueError`` so library callers can treat
it as one; the CLI turns it into a single line on stderr and exit code 2.
"""

from __future__ import annotations

from os import PathLike


class ReconError(Exception):
    """Base class of recon's own exceptions."""


class InputError(ReconError, ValueError):
    """Bad input that the user can fix (exit code 2 from the CLI).

    ``source`` names the file or option the problem is about; it prefixes the message.
    """

    def __init__(self, message: str, source: str | PathLike | None = None):
        self.source = None if source is None else str(source)
        self.problem = message
        super().__init__(f"{self.source}: {message}" if self.source else message)


class PluginError(ReconError):
    """A plugin is inconsistent with others (e.g. two plugins register the same name)."""


def require(condition: bool, message: str, source: str | PathLike | None = None) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message, source)
