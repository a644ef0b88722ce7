"""Linux process controls (prctl) for the processes a service starts: a name that `ps`, `top`
and the benchmarks can tell apart (children started with "spawn" are all `python`), and an end
tied to the parent's. Elsewhere both do nothing."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_NAME = 15
NAME_BYTES = 15  # the kernel keeps 16 bytes, the last a NUL


def _prctl(option: int, value: int | bytes) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def name_process(name: str) -> None:
    """This process's name in /proc/<pid>/comm (its main thread's), cut to 15 bytes."""
    _prctl(PR_SET_NAME, name.encode()[:NAME_BYTES])


def end_with_the_parent(parent_pid: int) -> None:
    """Be sent SIGTERM when the parent dies, so a child is never left serving on its own after
    its group is gone. `parent_pid`: the parent as the child knows it, to catch a parent that
    died before the request took effect."""
    if not sys.platform.startswith("linux"):
        return
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)
