"""Sweeps and reports: which compression, at what ratio, on my data?

``fedadc-experiment experiment=<name>`` expands ``conf/experiment/<name>.yaml`` into runs
(each into a deterministic, resumable directory); ``fedadc-report <dir>`` aggregates the
finished runs over seeds into tables and the paper's figures.
"""

from fedadc.experiment.expand import Experiment, PlannedRun, expand, load_experiment, plan
from fedadc.experiment.sweep import Runner, run_experiment, run_planned, run_reference
from fedadc.federated.results import run_name

__all__ = [
    "Experiment",
    "PlannedRun",
    "Runner",
    "expand",
    "load_experiment",
    "plan",
    "run_experiment",
    "run_name",
    "run_planned",
    "run_reference",
]
