"""Where a sweep's runs execute: in this process (`local`, `debug`) or as Slurm jobs (`slurm`).

The top of the harness: executors import the runner, never the other way round (resumable
pre-training, which the runner needs, is `bench.resume`). Kept import-light: nothing here pulls in
submitit or the scheduler modules; the CLI imports those where it needs them.
"""
