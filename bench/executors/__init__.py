"""Where a sweep's runs execute: in this process (`local`, `debug`) or as Slurm jobs (`slurm`).

Kept import-light on purpose: `bench.pretrain` imports `bench.executors.resume`, so nothing here
may pull in submitit or the scheduler modules; the CLI imports those where it needs them.
"""
