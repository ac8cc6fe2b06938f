"""The toy world's side of the experiments: what stands in for COCO / RefCOCO and their checks.

The method modules of ``dptlib`` never import this package; it imports them.
"""
