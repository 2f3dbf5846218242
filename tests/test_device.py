"""Process-wide CPU settings of bench.device, each checked in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

_STEPS = """
import resource, torch
from bench.device import retained_memory
n = 64 * 2**20 // 4

def step():  # a training step's big temporaries: made, used, freed; its page faults
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    temporaries = [torch.ones(n), torch.ones(n // 2)]
    del temporaries
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with retained_memory() as applied:
    print(applied, *[step() for _ in range(10)])
"""


def _faults_per_step(retain: str) -> tuple[bool, list[int]]:
    """Page faults of each of 10 steps, in a `retained_memory` block, that fill 96 MiB of
    fresh tensors (4 KiB pages)."""
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


_READS = """
import resource, torch
from bench.probe import global_l2_scale
gen = torch.Generator().manual_seed(0)
kept, rss = [], []
for window in range(40):  # MAE's small-preset maps: the cache keeps each window's, as a sweep does
    maps = [torch.randn(192, 16, 16, generator=gen) for _ in range(4)]
    global_l2_scale(maps, (128, 128))
    kept.append([m.half() for m in maps])
    rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096)
print(rss[-1] - rss[9])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_reading_windows_features_grows_memory_by_what_is_kept_only() -> None:
    """The L2 scale of each window read once made a 48 MiB full-resolution buffer; between the
    cache's small long-lived entries it fragmented glibc's heap by about that much per window,
    and a small-preset MAE sweep was killed for memory (18 GiB) while predicting."""
    out = subprocess.run([sys.executable, "-c", _READS], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 64 * 2**20  # 30 windows kept: 12 MiB of maps