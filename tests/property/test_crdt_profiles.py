"""The Hypothesis profiles keep their promises: `ci` by default, at least 500 examples."""

from __future__ import annotations

from hypothesis import settings

from tests.property.profiles import CI_EXAMPLES, THOROUGH_EXAMPLES


def test_profiles() -> None:
    assert settings.get_profile("ci").max_examples == CI_EXAMPLES >= 500
    assert settings.get_profile("ci").deadline is None
    assert settings.get_profile("thorough").max_examples == THOROUGH_EXAMPLES == 20_000
    assert settings.get_current_profile_name() in ("ci", "thorough")
    assert settings().max_examples >= CI_EXAMPLES
