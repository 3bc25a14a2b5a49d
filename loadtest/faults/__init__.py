"""Fault trials: kill -9 under load, object store faults, a full disk; each run against real
broker processes with real clients, counting what was lost. See loadtest/README.md."""

from .cli import Options, Row, main, run

__all__ = ["Options", "Row", "main", "run"]
