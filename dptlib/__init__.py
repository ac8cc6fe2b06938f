"""dptlib: Discriminative Probing and Tuning (DPT, CVPR 2024) for text-to-image generation.

The package by role, lowest layer first: ``config``, ``data``, ``checks``, ``method`` (the paper),
``official`` and ``evaluation``, ``toy``, ``experiments``, ``perf`` and ``teaching`` (docs/layout.md).
Messages go through ``logging`` (logger ``dptlib``); :func:`dptlib.config.show_messages` shows them.
"""

import logging

logging.getLogger("dptlib").addHandler(logging.NullHandler())
