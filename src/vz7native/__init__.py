"""vz7native: OpenVZ / Virtuozzo 7 ploop images and containers from Python.

Rooms: ``vz7native.ploop`` (libploop binding), ``vz7native.image`` (the ploop
format in pure Python), ``vz7native.mount`` (read-only mounts), ``vz7native.walk``
(a bytes-safe directory walker), ``vz7native.host`` (containers on a VZ7 host),
``vz7native.procfs`` (mounts, processes and flocks as ``/proc`` shows them),
``vz7native.cli`` (the ``vz7ploop`` command).

Importing this package imports nothing else: each room is loaded on demand, so
a Bareos job that needs the walker does not pay for libploop.
"""

__version__ = "0.1.0"


def _check_build(module, ffi, lib):
    """Refuse the compiled ``module`` (``vz7native._ploop`` or ``vz7native._walk``,
    given with its ``ffi`` and ``lib``) if it was built for another version of
    this package: its C side and our Python side would not match."""
    built_for = ffi.string(lib.VZ7N_PACKAGE_VERSION).decode("ascii")
    if built_for != __version__:
        raise ImportError(
            "%s was built for vz7native %s, but this is vz7native %s: "
            "rebuild the extension (pip install . or python setup.py build_ext)"
            % (module, built_for, __version__))


def build_info():
    """What the compiled libploop binding was built against (a dict of str/bool).

    Keys: ``package_version``; ``header`` (path of the libploop.h compiled
    against), ``flavor`` (``"vz7"`` for a 7.0.x header, ``"openvz"`` for 1.x) and
    ``header_version`` (``"7.0.x"`` or ``"1.x"``), both told by the header;
    ``library_dir`` (the run-time path the build recorded, ``""`` for the
    system's search), ``linked_library`` (the libploop file the build linked and
    loaded) and ``libploop_version`` (from that file's name, e.g. ``"1.15"``,
    ``""`` if it has none); ``library`` (the file this process loaded it from);
    the shims' choices ``read_dd``, ``fslabel``, ``cbt``, ``get_part``.
    """
    from vz7native import ploop

    return ploop.build_info()
