"""dptlib: the machinery behind the dpt notebooks."""
