"""The store's Alembic migrations: ``env.py``, ``script.py.mako`` and ``versions/``, shipped in the wheel.

Nothing imports this package; :mod:`controlplane.store.migrate` hands its
folder to Alembic, which loads the scripts by path (README.md says how to
write one).
"""
