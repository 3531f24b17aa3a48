"""``concord lab chaos``: many devices, every fault, and a checker that proves nothing
was lost (docs/reliability.md). ``run.py`` orchestrates; ``cluster.py`` owns the server
processes and their faults; ``schedule.py`` the seeded fault schedule; ``workload.py``
the users, spaces and devices; ``checker.py`` the properties; ``report.py`` the table.
"""
