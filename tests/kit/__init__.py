"""The testing kit: what the project's own tests use, for testing your changes the same way
(``docs/testing.md``).

- :mod:`lakehouse.testing.plugin`: pytest fixtures (a Prefect test server, Sail, an engine parameter, generated
  landing files, a lake the daily flow built); load with ``pytest_plugins = ["lakehouse.testing.plugin"]``.
- :func:`frame`, :func:`to_engine`, :func:`rows`: build a transform's input on an engine, read its output back;
  :func:`handed_over`: the sizes of what engines hand the driver while it is open.
- :func:`run_days`: run the daily flow over consecutive days into a lake (:class:`BuiltLake`).
- :mod:`lakehouse.testing.servers`: start a server on loopback, wait for it, stop it by its process id.

Installed with the ``dev`` extra (pytest).
"""

from lakehouse.testing.engines import DELTA_ENGINES, TRANSFORM_ENGINES, frame, handed_over, rows, to_engine
from lakehouse.testing.lakes import BuiltLake, run_days

__all__ = ["DELTA_ENGINES", "TRANSFORM_ENGINES", "BuiltLake", "frame", "handed_over", "rows", "run_days", "to_engine"]
