"""``keep_freed_memory``: a CPU training step stops faulting its temporaries back in.

Measured in a fresh interpreter each (malloc settings are process-wide and sticky): an
AoAFFM step at K = 256 frees ~6 MB buffers that glibc by default returns to the kernel; the
next step then takes ~6,500 minor page faults (measured here), with the setting none after
warm-up. Judged on the median step: now and then a batch with more distinct ids than any
before needs a larger gradient buffer and grows the heap once (a first touch of up to ~2,100
faults in one of ten steps, seen in 3 of 10 fresh runs here and once in CI as a 10-step mean
of 152), which is not a step faulting its temporaries back in.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

STEPS = """
import resource, torch
from aoaffm.models import create
from aoaffm.train.allocator import keep_freed_memory
from aoaffm.train.config import TrainConfig
from aoaffm.train.loop import build_optimizer, sparse_parameters, training_step

print(keep_freed_memory())
torch.set_num_threads(1)
torch.manual_seed(0)
n_fields, n_features, k = 10, 2000, 256
model = create("aoaffm", n_features, n_fields, k, attention_size=256).train()
config = TrainConfig(learning_rate=0.05, batch_size=128, epochs=1)
step = training_step(model, build_optimizer(model, sparse_parameters(model), config))
generator = torch.Generator().manual_seed(1)
per_field = n_features // n_fields
batches = [
    torch.randint(0, per_field, (128, n_fields), generator=generator)
    + torch.arange(n_fields) * per_field
    for _ in range(30)
]
labels = torch.ones(128)
for ids in batches[:20]:  # warm-up: first touches of the optimizer state and the heap
    step(ids, None, labels)
faults = []
for ids in batches[20:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(ids, None, labels)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[len(faults) // 2])
"""


def _run(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_training_steps_stop_faulting_their_temporaries_in():
    applied, median_step_faults = _run({})
    assert applied == "True"
    # a single 5.9 MB buffer faulted back in would be ~1,440 faults; the default is ~6,500
    assert float(median_step_faults) < 100


def test_the_environments_malloc_settings_stand():
    applied, _ = _run({"MALLOC_TRIM_THRESHOLD_": str(2**20)})
    assert applied == "False"
