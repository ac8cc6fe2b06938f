"""The experiment machinery: the one-command reproduction, the ablation batch runner, the claims
read from finished runs, convergence and sampler checks, the report writer, the paper-scale dry run.
"""
