"""Errors raised by the index library; the CLI maps them to user-facing errors."""

from __future__ import annotations


class IndexError_(Exception):
    """Base class: a problem with an index directory the user can act on (message is one sentence)."""


class ModelUnavailable(IndexError_):
    """CLIP weights are neither on disk nor downloadable; the message says what to fetch and how."""


class IndexLocked(IndexError_):
    """Another writer holds the index lock."""


class IndexMissing(IndexError_):
    """There is no index at the given directory."""


class ModelMismatch(IndexError_):
    """The index was built with a different CLIP model than the one requested."""


class IndexDamaged(IndexMissing):
    """A file of the index is missing, truncated or altered; the next `index build` repairs it.

    A subclass of IndexMissing because, to a reader, a damaged index is as unusable as none.
    """

    def __init__(self, message: str, problems: list | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ModelBroken(IndexError_):
    """A local CLIP directory or checkpoint exists but a file in it is damaged; the message names the file."""
