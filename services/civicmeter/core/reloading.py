"""A configuration file that is reloaded when it changes, keeping the last good version.

The first load happens at construction and raises: a service must not start on a bad file.
After that, `current()` looks at the file's modification stamp; when it changed, the file is
loaded again, and if the new version is bad the error (file, line, reason) is logged once and
the last good version stays in force until the file changes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from civicmeter.policy.yaml_source import SourceFile

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        errors: tuple[type[Exception], ...],
        what: str,
        log: logging.Logger,
    ) -> None:
        self.path = path
        self._log = log
        self._load = load
        self._errors = errors
        self._what = what
        self._seen = SourceFile.of(path)  # taken before reading: an edit meanwhile is a change
        self._value = load(path)
        self.generation = 1  # counts the versions loaded, so users can tell a new one
        self.last_error: Exception | None = None

    def current(self) -> T:
        if self._seen.changed():
            self._seen = SourceFile.of(self.path)
            try:
                self._value = self._load(self.path)
            except self._errors as exc:
                self.last_error = exc
                self._log.error(
                    "%s not reloaded, the last good one stays in force: %s", self._what, exc
                )
            else:
                self.generation += 1
                self.last_error = None
                self._log.info("%s reloaded from %s", self._what, self.path)
        return self._value
