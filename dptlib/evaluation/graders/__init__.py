"""Evaluators of the paper's tables at paper scale.

Each evaluator has one interface: ``score(images, items) -> per-image table`` (``items``: one row
per image with its ``prompt`` and the columns that pair it across methods, e.g. prompt id, seed,
method; the table keeps them, adds its score columns and ``grader``, the model that graded) and
``summarize(table) -> {column: value}``.

- ``rules``: the benchmarks' scoring arithmetic (B-VQA, the spatial rule, 3-in-1, TIFA, the
  GLIP score), pure functions tested on hand-computed cases and against the benchmarks' own code
  (``tests/test_evaluator_parity.py``);
- ``text``: what T2I-CompBench reads from a prompt (noun chunks, the two objects, the prompt
  without adjectives), by spaCy as the benchmark, or by a measured rule-based fallback;
- ``clip``: the paper's CLIP and T2I-CompBench's non-spatial CLIP (100 * cos, open_clip's preprocessing);
- ``blip2``: BLIP-M and BLIP-C;
- ``vqa``: BLIP VQA yes / no and T2I-CompBench's B-VQA.
- ``compbench``: T2I-CompBench's 3-in-1 from the three scorers above;
- ``tifa``: TIFA v1.0 with BLIP VQA standing in for mPLUG, SBERT mapping to the choices;
- ``inception``: IS and FID (torchmetrics), set metrics with their sizes;
- ``detection``: an open-vocabulary detector standing in for GLIP (CC-500) and UniDet
  (T2I-CompBench spatial), labelled "(stand-in)" in its columns.
"""
