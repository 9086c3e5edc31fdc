"""What the process machinery reports; the service maps these to Connect codes."""

from __future__ import annotations


class ProcessNotFound(LookupError):
    """No live process matches the selector."""


class NoSelector(ValueError):
    """The request selects no process at all (upstream's `invalid input type <nil>`)."""


class OutputLost(Exception):
    """A subscriber was detached for stalling: the output it received is incomplete."""
