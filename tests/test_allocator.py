"""CPU allocation: large freed blocks kept for reuse (glibc), and the switch to turn it off."""

from __future__ import annotations

import platform
import subprocess
import sys

from lgdnet.allocator import ENV_VARIABLE, keep_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_environment_switches_it_off(monkeypatch):
    monkeypatch.setenv(ENV_VARIABLE, "0")
    assert keep_freed_memory() is False


def test_applied_on_glibc_and_large_blocks_stop_being_mapped():
    """In a fresh process: with the setting, freed 64 MiB blocks are reused instead of being
    unmapped, so allocating them again touches no new pages (minor page faults stay flat;
    without it every allocation maps and faults in 64 MiB anew)."""
    program = """
import resource
import torch
from lgdnet.allocator import keep_freed_memory
applied = keep_freed_memory(respect_environment=False)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # 64 MiB blocks allocated, touched and freed: the heap grows to fit
    torch.ones(16 * 2**20).sum()
before = faults()
for _ in range(5):
    torch.ones(16 * 2**20).sum()
print(applied, faults() - before)
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True).stdout.split()
    applied, new_faults = out[0] == "True", int(out[1])
    assert applied is GLIBC
    if GLIBC:
        # 5 x 64 MiB of fresh pages are 81,920 faults of 4 KiB; with the setting the blocks
        # are reused (now and then one lands elsewhere in the heap and faults in once: 16,384)
        assert new_faults <= 16384 + 1000, new_faults
