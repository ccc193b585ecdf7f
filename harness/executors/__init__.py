"""Carrying out the benchmark's plans (``pitfalls_benchmark.plans``) on a model with an editor: one executor per mode.

* ``workbench``: what every executor is given (editor, scorer, guard, the unedited
  model's scores on disk) and the pieces they share: a case's seed, its fit check,
  its record with the pitfall decided.
* ``single``: one case on the model itself, its edits undone by the guard.
* ``lockstep``: ``--case-batch K``: the unedited-model facts of K cases scored
  together, their first edits worked out ahead, or the K cases run together on
  per-row low-rank updates when the editor can compute its updates.
* ``chained``: ``--sequential``: cases as links of one chain of accumulating edits.

Each executor takes its inputs as arguments and returns records; nothing is
handed from one call to the next except what a caller passes back in (a
:class:`lockstep.BatchStart`, a :class:`chained.ChainRun`).
"""
