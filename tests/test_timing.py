"""The float-path benchmark's checksum is what a cross-CPU comparison reads, so it must be a
function of the float path alone: the same steps in one process give the same weights."""

import torch

from dptlib.timing import float_step


def test_float_step_checksum_repeats_on_one_float_path():
    first = float_step(steps=2, septuples=1)
    second = float_step(steps=2, septuples=1)
    assert first["checksum"] == second["checksum"]
    assert first["seconds_per_step"] > 0
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_float_step_checksum_sees_a_different_computation():
    # a different seed is different arithmetic: the checksum must tell it apart
    assert float_step(steps=2, septuples=1)["checksum"] != float_step(steps=2, septuples=1, seed=1)["checksum"]
