"""The policy in force, reloaded when its file changes, the last good version kept.

The first load happens at construction and raises: a service must not start on a bad policy.
After that, `current()` (called each round, or each call) reloads the file when it changed; a
bad version is logged (its file, entry and reason) once, and the last good version stays in
force until the file changes again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from civicmeter.core.reloading import ReloadingFile
from civicmeter.policy.organization import PolicyError, PolicySet, load_policies

log = logging.getLogger("civicmeter.policy")


class PolicySource(ReloadingFile[PolicySet]):
    def __init__(self, path: Path) -> None:
        super().__init__(path, load_policies, (PolicyError,), "policy file", log)
