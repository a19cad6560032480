"""The shape of the library's sessions (a backup of a container, a restore of one).

A session is opened once and closed on every path: everything it takes goes on
its ``ExitStack`` the moment it exists, so ``close()`` undoes exactly what was
done, in reverse order, also after a failed ``open()``.
"""
import contextlib


class Session(object):
    """Subclasses do their work in ``_open()`` and register every resource on
    ``self._stack``; ``open()`` closes again when ``_open()`` fails."""

    def __init__(self):
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def open(self):
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self):
        raise NotImplementedError

    def close(self):
        """Undo what was done and release what was taken (idempotent)."""
        stack, self._stack = self._stack, contextlib.ExitStack()
        stack.close()
