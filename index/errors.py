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
