"""tapegrad as a GradBench tool: ``python -m benchmarks.gradbench [--replay [--optimize]]`` (from the
repo's root).

GradBench (github.com/gradbench/gradbench) runs an eval and a tool as two processes that talk JSON
lines (:mod:`.protocol`). This tool implements the evals ``det``, ``llsq``, ``lse``, ``ode``,
``lstm``, ``gmm``, ``ba`` and ``kmeans``, one module each (the objective, GradBench's inputs
replayed, a reference to check against, and ``prepare`` for the tool), in three variants named apart:

* ``tapegrad`` records inside the timed region (eagerly, or a fresh ``tg.compile``);
* ``tapegrad-replay`` (``--replay``) records once while preparing, like GradBench's ADOL-C tool,
  and times the replay;
* ``tapegrad-replay-opt`` (``--replay --optimize``) also optimizes the tape while preparing (the
  passes of ``tg.compile(optimize=True)``: dead code, constants, common subexpressions, rows sorted
  into vector runs) and times its replay.

The benchmark suite (``benchmarks/test_gradbench*.py``) times the same objectives.
"""

from . import ba, det, gmm, kmeans, llsq, lse, lstm, ode

EVALS = {module.__name__.rsplit(".", 1)[1]: module for module in (det, llsq, lse, ode, lstm, gmm, ba, kmeans)}
MODULES = {name: module.prepare for name, module in EVALS.items()}
