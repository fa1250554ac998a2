"""User-facing errors: one sentence on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations


class DiscffError(Exception):
    """An error the user can act on; the CLI prints its message alone and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MissingModelError(DiscffError):
    """Weights that are neither on disk nor downloadable (exit code 2, as the issue asks)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)
