"""A pytest plugin for mutation runs: the ``mutation`` Hypothesis profile.

Loaded with ``-p tests.mutation.plugin --hypothesis-profile=mutation`` by ``run.py``. Each
mutant reruns the property tests, so they draw fewer examples than ``ci`` and are
derandomised (the same examples for every mutant, no example database): a score does not
move between two runs of the same code.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

MUTATION_EXAMPLES = 50

settings.register_profile(
    "mutation",
    max_examples=MUTATION_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
