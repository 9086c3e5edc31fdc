"""What the watching machinery reports; the service maps these to Connect codes."""

from __future__ import annotations


class WatcherNotFound(LookupError):
    """No polling watcher has that id (never created, removed, or the daemon restarted)."""


class WatchFailed(Exception):
    """A watch stopped working (kernel queue overflow, too many unread events)."""
