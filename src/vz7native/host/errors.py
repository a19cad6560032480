"""The errors of ``vz7native.host``: one base class, one subclass per refusal.

Every message names the object it is about (the container by name and UUID, the
file, the option) so that a Bareos job log line is enough to act on it.
"""


class HostError(Exception):
    """Base of every error raised by ``vz7native.host``."""


class ConfigError(HostError):
    """A VZ7 configuration file (``ve.conf``, ``vz.conf``) cannot be read or parsed."""


class ContainerNotFound(HostError, LookupError):
    """No container on the host has the name or UUID that was asked for."""


class ContainerMismatch(HostError):
    """The name and the UUID that were given belong to different containers."""


class UnsupportedLayout(HostError):
    """The container's storage is not a single ploop root disk (simfs, several disks...)."""


class StatusError(HostError):
    """The container's status cannot be decided: the host does not show the signals."""


class LockTimeout(HostError):
    """A lock could not be taken in time; ``holder_pid`` is who holds it (or None)."""

    def __init__(self, message, path, holder_pid):
        HostError.__init__(self, message)
        self.path = path
        self.holder_pid = holder_pid


class PcompactRunning(HostError):
    """pcompact (or ``vzctl compact``) is working on the container."""

    def __init__(self, message, pid):
        HostError.__init__(self, message)
        self.pid = pid


class RegisterError(HostError):
    """Registering a restored container with the VZ7 tools failed."""

    def __init__(self, message, command=None, output=""):
        HostError.__init__(self, message)
        self.command = command
        self.output = output


class BlockerError(HostError):
    """A blocker glob is not usable (empty, or the container root cannot be opened)."""
