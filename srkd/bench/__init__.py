"""srkd bench: compare distillation methods under one protocol, over seeds, with paired gains.

* :mod:`srkd.bench.protocol`: the protocol file and the ``srkd distill`` command of each run;
* :mod:`srkd.bench.runner`: validation of the whole protocol, then the grid of runs (resumable);
* :mod:`srkd.bench.aggregate`: run folders to the table (mean, spread, paired differences);
* :mod:`srkd.bench.report`: the self-contained HTML report (curves, crops, table, protocol).
"""

from . import aggregate
from .protocol import Entry, Protocol, Run, load_protocol
from .runner import run_grid, run_state, validate

__all__ = ["Entry", "Protocol", "Run", "aggregate", "load_protocol", "run_grid", "run_state", "validate"]
