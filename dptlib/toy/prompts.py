"""Generation benchmarks: the toy analogues of the paper's prompt sets, each prompt with its exact spec.

| toy benchmark   | stands in for        | categories                                   | distribution |
|-----------------|----------------------|----------------------------------------------|--------------|
| ``toy-cc``      | CC-500 (OOD)         | ``id`` / ``ood`` (a held-out colour-shape pair) | both      |
| ``toy-abc``     | ABC-6K (MD)          | ``original`` / ``swapped`` colour pairs      | ID           |
| ``toy-nss``     | COCO-NSS1K (ID)      | ``counting``, ``spatial``, ``mixed``, ``attribute`` | ID    |
| ``toy-compbench`` | T2I-CompBench      | ``colour``, ``shape``, ``size``, ``spatial`` binding | ID   |

Every prompt carries a :class:`~dptlib.toy.world.PromptSpec`, so :func:`dptlib.toy.world.score` grades
a generated image exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dptlib.toy.world import RELATIONS, SIZES, ObjectSpec, PromptSpec, ToyWorldConfig

TOY_BENCHMARKS = ("toy-cc", "toy-abc", "toy-nss", "toy-compbench")


@dataclass(frozen=True)
class BenchmarkPrompt:
    """A prompt of a benchmark; ``spec`` is None for real benchmarks (no exact meaning known)."""

    prompt: str
    category: str
    distribution: str  # "ID", "OOD" or "MD" (mixed), as in the paper's Tab. 1
    spec: PromptSpec | None = None


def _pick(candidates: list, n: int, rng: np.random.Generator) -> list:
    """``n`` distinct candidates (all of them if fewer), in a seeded random order."""
    order = rng.permutation(len(candidates))[: min(n, len(candidates))]
    return [candidates[i] for i in order]


def _two_objects(config: ToyWorldConfig, same_shape: bool | None, same_colour: bool | None, pairs) -> list[tuple]:
    out = []
    for (c1, s1), (c2, s2) in itertools.permutations(pairs, 2):
        if same_shape is not None and (s1 == s2) != same_shape:
            continue
        if same_colour is not None and (c1 == c2) != same_colour:
            continue
        out.append(((c1, s1), (c2, s2)))
    return out


def toy_benchmark(name: str, config: ToyWorldConfig | None = None, n: int = 300, seed: int = 0) -> list[BenchmarkPrompt]:
    """About ``n`` prompts of the toy benchmark ``name`` (split evenly over its categories)."""
    config = config or ToyWorldConfig()
    rng = np.random.default_rng([seed, TOY_BENCHMARKS.index(name) if name in TOY_BENCHMARKS else 0])
    ident = config.allowed_pairs
    every = tuple(itertools.product(config.colours, config.shapes))
    if name == "toy-cc":
        specs = [
            PromptSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)), category="ood" if {(c1, s1), (c2, s2)} & set(config.held_out) else "id")
            for (c1, s1), (c2, s2) in _two_objects(config, None, False, every)
        ]
        by_category = {c: [s for s in specs if s.category == c] for c in ("id", "ood")}
        chosen = _pick(by_category["id"], n // 2, rng) + _pick(by_category["ood"], n - n // 2, rng)
        return [BenchmarkPrompt(s.text, s.category, s.category.upper(), s) for s in chosen]
    if name == "toy-abc":
        out = []
        # swapping the colours of two different shapes changes the meaning; sizes vary the wording
        pairs = [((c1, s1, z1), (c2, s2, z2)) for (c1, s1), (c2, s2) in _two_objects(config, False, False, ident)
                 if (c2, s1) in ident and (c1, s2) in ident and c1 < c2
                 for z1, z2 in ((None, None), ("large", "small"), ("small", "large"), ("large", "large"))]
        for (c1, s1, z1), (c2, s2, z2) in _pick(pairs, n // 2, rng):
            original = PromptSpec((ObjectSpec(s1, c1, z1), ObjectSpec(s2, c2, z2)), category="original")
            swapped = PromptSpec((ObjectSpec(s1, c2, z1), ObjectSpec(s2, c1, z2)), category="swapped")
            out += [BenchmarkPrompt(original.text, "original", "MD", original),
                    BenchmarkPrompt(swapped.text, "swapped", "MD", swapped)]
        return out
    if name == "toy-nss":
        counts = range(2, config.max_objects + 1)
        categories = {
            "counting": [PromptSpec((ObjectSpec(s, c, z, count=k),), category="counting")
                         for (c, s) in ident for k in counts for z in (None, *SIZES)],
            "spatial": [PromptSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)), relation=r, category="spatial")
                        for (c1, s1), (c2, s2) in _two_objects(config, None, None, ident) for r in RELATIONS],
            "mixed": [PromptSpec((ObjectSpec(s1, c1, count=k), ObjectSpec(s2, c2)), relation=r, category="mixed")
                      for (c1, s1), (c2, s2) in _two_objects(config, None, None, ident) for r in RELATIONS
                      for k in counts if k + 1 <= config.max_objects],
            "attribute": [PromptSpec((ObjectSpec(s, c, z),), category="attribute") for (c, s) in ident for z in (None, *SIZES)],
        }
        return _balanced(categories, n, rng, "ID")
    if name == "toy-compbench":
        categories = {
            "colour": [PromptSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)), category="colour")
                       for (c1, s1), (c2, s2) in _two_objects(config, True, False, ident)],
            "shape": [PromptSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)), category="shape")
                      for (c1, s1), (c2, s2) in _two_objects(config, False, True, ident)],
            "size": [PromptSpec((ObjectSpec(s1, c1, z1), ObjectSpec(s2, c2, z2)), category="size")
                     for (c1, s1), (c2, s2) in _two_objects(config, None, None, ident)
                     for z1, z2 in (("large", "small"), ("small", "large"))],
            "spatial": [PromptSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)), relation=r, category="spatial")
                        for (c1, s1), (c2, s2) in _two_objects(config, None, None, ident) for r in RELATIONS],
        }
        return _balanced(categories, n, rng, "MD")
    raise ValueError(f"unknown toy benchmark {name!r}; toy benchmarks: {list(TOY_BENCHMARKS)}")


def _balanced(categories: dict[str, list[PromptSpec]], n: int, rng, distribution: str) -> list[BenchmarkPrompt]:
    per = max(1, n // len(categories))
    return [BenchmarkPrompt(s.text, cat, distribution, s) for cat, specs in categories.items() for s in _pick(specs, per, rng)]


def _round_robin(prompts: list[BenchmarkPrompt]) -> list[BenchmarkPrompt]:
    """The prompts with their categories interleaved (a, b, c, a, b, c, ...), each category's
    order kept: any first n of them are balanced over the categories."""
    by_category: dict[str, list] = {}
    for p in prompts:
        by_category.setdefault(p.category, []).append(p)
    columns = list(by_category.values())
    return [column[i] for i in range(max(map(len, columns), default=0)) for column in columns if i < len(column)]


def parse_cell(cell: str) -> tuple[str, str]:
    """"toy-cc (ID)" -> ("toy-cc", "ID"): a benchmark and one of its prompt distributions."""
    name, _, rest = cell.partition(" (")
    if name not in TOY_BENCHMARKS or not rest.endswith(")"):
        raise ValueError(f"a cell is 'benchmark (distribution)' with a benchmark of {list(TOY_BENCHMARKS)}, got {cell!r}")
    return name, rest[:-1]


def generation_prompts(config: ToyWorldConfig | None, sizes: dict[str, int], n_validation: int, seed: int = 0
                       ) -> tuple[dict[str, list[BenchmarkPrompt]], dict[str, list[BenchmarkPrompt]]]:
    """Test and validation prompts of the generation experiments, per cell ("toy-cc (ID)",
    "toy-cc (OOD)", "toy-nss (ID)", "toy-abc (MD)", "toy-compbench (MD)").

    ``sizes``: test prompts per cell (fewer where the cell has fewer), balanced over its
    categories; ``n_validation`` prompts per cell for choices (checkpoints, eta), none of them a
    test prompt. Both are seeded and do not depend on each other's sizes' order."""
    test, validation = {}, {}
    for cell, n in sizes.items():
        name, distribution = parse_cell(cell)
        every = _round_robin([p for p in toy_benchmark(name, config, n=10**6, seed=seed) if p.distribution == distribution])
        test[cell], validation[cell] = every[:n], every[n : n + n_validation]
        if not test[cell]:
            raise ValueError(f"cell {cell!r} has no prompts")
    return test, validation
