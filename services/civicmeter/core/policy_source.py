"""The policy in force, reloaded when its file changes, the last good version kept.

The first load happens at construction and raises: a service must not start on a bad policy.
After that, `current()` (called each round, or each call) looks at the file's modification
stamp; when it changed, the file is loaded again. A good version takes over at once; a bad one
is logged (its file, entry and reason) once, and the last good version stays in force until the
file changes again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from civicmeter.core.policy import PolicyError, PolicySet, load_policies

log = logging.getLogger("civicmeter.policy")


class PolicySource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = _stamp(path)  # taken before reading: an edit meanwhile is a change
        self._policies = load_policies(path)
        self.last_error: PolicyError | None = None

    def current(self) -> PolicySet:
        stamp = _stamp(self.path)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                policies = load_policies(self.path)
            except PolicyError as exc:
                self.last_error = exc
                log.error(
                    "policy file not reloaded, version %r stays in force: %s",
                    self._policies.version,
                    exc,
                )
            else:
                self._policies, self.last_error = policies, None
                log.info("policy version %r loaded from %s", policies.version, self.path)
        return self._policies


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        # stat follows symbolic links: a Kubernetes ConfigMap update swaps the link's target.
        status = os.stat(path)
    except OSError:
        return None  # missing: load_policies says so, naming the file
    return (status.st_mtime_ns, status.st_size, status.st_ino)
