"""Benchmarks against peers and of the whole system (docs/benchmarks.md): each one
command, bounded, printing a table and recording its figures with their command.

May import: anything. Imported by nothing but its own modules and the smoke tests.
"""
