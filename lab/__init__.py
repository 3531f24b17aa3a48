"""The reliability lab (``concord lab``): scripted scenarios that reproduce each failure
mode against a running server and report PASS or FAIL (docs/lab.md).

May import: anything (it drives servers through ``concord`` and devices through
``client``). Imported by ``concord`` (lazily, for ``concord lab``).
"""
