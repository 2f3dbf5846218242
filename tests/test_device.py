"""Process-wide CPU settings of bench.device, each checked in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

_STEPS = """
import resource, torch
from bench.device import retain_freed_memory
print(retain_freed_memory())
n = 64 * 2**20 // 4
for step in range(10):  # a training step's big temporaries: made, used, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    temporaries = [torch.ones(n), torch.ones(n // 2)]
    del temporaries
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_step(retain: str) -> tuple[bool, list[int]]:
    """Page faults of each of 10 steps that fill 96 MiB of fresh tensors (4 KiB pages)."""
    env = {**os.environ, "BENCH_RETAIN_MEMORY": retain}
    out = subprocess.run([sys.executable, "-c", _STEPS], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", [int(n) for n in out[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_big_temporaries_stop_faulting_in_each_step_and_the_switch_turns_it_off() -> None:
    applied, faults = _faults_per_step("1")
    assert applied and max(faults[-3:]) < 1000  # steady state: freed blocks are reused
    applied, faults = _faults_per_step("0")
    assert not applied and min(faults[-3:]) > 8000  # unmapped on free, faulted in every step
