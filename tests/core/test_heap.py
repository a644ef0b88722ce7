import subprocess
import sys

import pytest

# In a fresh interpreter (steady_heap() called first or not): free a 4 MiB block, then say
# whether steady_heap set anything and whether a 1 MiB block is mapped on its own (glibc's
# mallinfo2: bytes in mapped blocks) rather than carved from the heap.
PROBE = """
import ctypes, sys
from civicmeter.core.heap import steady_heap
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
steady = sys.argv[1] == "steady" and steady_heap()
large = b"x" * (4 << 20)
del large
before = libc.mallinfo2().hblkhd
block = b"y" * (1 << 20)
print(steady, libc.mallinfo2().hblkhd - before >= 1 << 20)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def run_probe(mode: str, **env: str) -> tuple[bool, bool]:
    """(steady_heap set the thresholds, the 1 MiB block was mapped)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    steady, mapped = out.stdout.split()
    return steady == "True", mapped == "True"


def test_glibc_by_default_stops_mapping_blocks_smaller_than_one_freed() -> None:
    assert run_probe("default") == (False, False)


def test_a_steady_heap_keeps_mapping_large_blocks_and_so_returns_them() -> None:
    assert run_probe("steady") == (True, True)


def test_a_threshold_the_operator_set_is_left_alone() -> None:
    assert run_probe("steady", MALLOC_MMAP_THRESHOLD_=str(8 << 20)) == (False, False)
