"""Toy benchmark prompt sets: sizes, distributions, and that every prompt is realizable."""

from collections import Counter

import pytest

from dptlib.toy.prompts import TOY_BENCHMARKS, toy_benchmark
from dptlib.toy.world import ToyWorld, ToyWorldConfig, score


@pytest.fixture(scope="module")
def world():
    return ToyWorld(ToyWorldConfig())


@pytest.mark.parametrize("name", TOY_BENCHMARKS)
def test_benchmark_is_deterministic_sized_and_realizable(world, name):
    prompts = toy_benchmark(name, world.config, n=300)
    assert 200 <= len(prompts) <= 500
    assert prompts == toy_benchmark(name, world.config, n=300)
    assert len({p.prompt for p in prompts}) == len(prompts)
    for i, p in enumerate(prompts[::7]):
        assert p.spec.text == p.prompt
        assert score(p.spec, world.render(world.realize(p.spec, seed=i)), world.config)["correct"], p.prompt


def test_toy_cc_separates_in_and_out_of_distribution(world):
    held = set(world.config.held_out)
    prompts = toy_benchmark("toy-cc", world.config, n=300)
    assert {p.distribution for p in prompts} == {"ID", "OOD"}
    for p in prompts:
        assert bool(p.spec.pairs() & held) == (p.distribution == "OOD")


def test_toy_abc_pairs_swap_colours(world):
    prompts = toy_benchmark("toy-abc", world.config, n=100)
    for original, swapped in zip(prompts[::2], prompts[1::2]):
        a, b = original.spec.objects
        c, d = swapped.spec.objects
        assert (a.shape, b.shape) == (c.shape, d.shape) and (a.colour, b.colour) == (d.colour, c.colour)


def test_in_distribution_benchmarks_avoid_held_out_pairs(world):
    held = set(world.config.held_out)
    for name in ("toy-abc", "toy-nss", "toy-compbench"):
        assert not any(p.spec.pairs() & held for p in toy_benchmark(name, world.config))


def test_unknown_benchmark_and_unrealizable_prompt(world):
    with pytest.raises(ValueError, match="unknown toy benchmark"):
        toy_benchmark("cc-500-typo", world.config)
    from dptlib.toy.world import ObjectSpec, PromptSpec

    with pytest.raises(ValueError, match="at most 3"):
        world.realize(PromptSpec((ObjectSpec("circle", "red", count=4),)))


def test_generation_prompts_split_cells_into_disjoint_balanced_test_and_validation():
    from dptlib.toy.prompts import generation_prompts

    sizes = {"toy-cc (ID)": 150, "toy-cc (OOD)": 56, "toy-nss (ID)": 40}
    test, validation = generation_prompts(None, sizes, n_validation=20)
    assert [len(test[c]) for c in sizes] == [150, 56, 40] and [len(validation[c]) for c in sizes] == [20, 20, 20]
    for cell in sizes:
        assert not {p.prompt for p in test[cell]} & {p.prompt for p in validation[cell]}
    assert {p.distribution for p in test["toy-cc (OOD)"]} == {"OOD"} and {p.category for p in test["toy-cc (ID)"]} == {"id"}
    counts = Counter(p.category for p in test["toy-nss (ID)"])  # round robin over the four categories
    assert counts == {"counting": 10, "spatial": 10, "mixed": 10, "attribute": 10}
    again, _ = generation_prompts(None, {"toy-nss (ID)": 40, "toy-cc (ID)": 150}, n_validation=20)
    assert again["toy-cc (ID)"] == test["toy-cc (ID)"]  # a cell's prompts do not depend on the others
    with pytest.raises(ValueError, match="benchmark"):
        generation_prompts(None, {"toy-cc": 5}, 1)
