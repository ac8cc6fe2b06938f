"""Performance: timings of the method's hot paths, a profile of a run, and the GPU check."""
