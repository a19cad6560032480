"""Paths inside vz7native: bytes, whatever the caller passed.

Pure and import-free so every room (the libploop binding, the image format, the
walker's callers, the plugin) shares one definition.
"""
import os

DESCRIPTOR_NAME = b"DiskDescriptor.xml"
# Where the ploop kernel driver hands out device minors: there when it is loaded.
PLOOP_MINOR = "/proc/vz/ploop_minor"


def fspath(path):
    """``path`` (str, bytes or path-like) as bytes, refusing NUL bytes."""
    data = os.fsencode(path)
    if b"\0" in data:
        raise ValueError("path contains a NUL byte: %r" % (data,))
    return data


def show(path):
    """A bytes path as text for messages (undecodable bytes escaped)."""
    return os.fsdecode(path)


def descriptor_path(path):
    """Absolute DiskDescriptor.xml path for the xml itself or the directory holding it."""
    path = os.path.abspath(fspath(path))
    if os.path.isdir(path):
        path = os.path.join(path, DESCRIPTOR_NAME)
    return path
