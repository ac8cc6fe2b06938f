"""Evaluators of the paper's tables at paper scale (issue: paper scale end to end).

``rules``: the benchmarks' scoring arithmetic (B-VQA, the spatial rule, 3-in-1, TIFA, the GLIP
score), as pure functions of what a model answered, tested on hand-computed cases.
"""
