"""The paper's tables and figures as named experiments (`bench experiment NAME`).

One module per table or figure family; each registers its experiments with `@experiment`.
`base` holds the contract: an experiment names the runs it needs (`runs`) and turns their
records into files (`write`); the harness runs what is missing in between.
"""
from bench.experiments.base import EXPERIMENTS, Experiment, ExperimentContext, experiment, get, names

__all__ = ["EXPERIMENTS", "Experiment", "ExperimentContext", "experiment", "get", "names"]
