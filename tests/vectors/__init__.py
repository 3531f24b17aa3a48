"""Shared test vectors: op histories with the merged states `crdt/` derives from them.

`python -m tests.vectors.generate` writes them to `js/vectors/*.json`; the pytest test
`tests/unit/test_shared_vectors.py` and the Node tests in `js/test/` both check them.
"""
