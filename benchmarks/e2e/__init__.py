"""Tiny no-op apps, one per queue, started by ``scenarios/endtoend.py`` with each queue's own CLI.

Every handler records the id it ran (one ``write`` to a per-process file in
``PRISMQ_E2E_IDS``), so duplicates and losses are counted the same way for every queue.
"""
