"""Mutation testing of the core (``make mutation``): which modules, against which tests.

Not a test suite: ``targets.py`` maps each mutated module to the fast test subset that
must kill its mutants, ``run.py`` runs mutmut per target and reports the score per module
and the surviving mutants, ``plugin.py`` gives those runs a small, derandomised Hypothesis
profile. See docs/development.md, "Mutation testing".
"""
