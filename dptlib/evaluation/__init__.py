"""How outputs are graded: ITM / REC metrics, the baselines, statistics, linear probes of the
features, the paper-scale graders (``graders/``) and the benchmark tables (``benchmarks``).
Imports the method and the data, never the toy world.
"""
