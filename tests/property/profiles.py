"""Hypothesis profiles for the CRDT properties: `ci` (the default) and `thorough`.

Imported by `tests/property/conftest.py`. Importing it from the root `tests/conftest.py`
too would let `pytest --hypothesis-profile=thorough` work without naming this directory.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 500
THOROUGH_EXAMPLES = 20_000


def _register(name: str, examples: int) -> None:
    settings.register_profile(
        name,
        max_examples=examples,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


_register("ci", CI_EXAMPLES)
_register("thorough", THOROUGH_EXAMPLES)

# A profile named on the command line is loaded by Hypothesis's plugin before or after this
# module runs (depending on whether pytest was given this directory); only fill the gap.
if settings.get_current_profile_name() == "default":
    settings.load_profile("ci")
