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

    Keys: ``package_version``, ``libploop_version`` (as pkg-config reported it,
    may be empty), ``header`` (path of libploop.h), ``flavor`` (``"vz7"`` for a
    7.0.x header, ``"openvz"`` for 1.x), ``read_dd``, ``fslabel``, ``cbt``.
    """
    from vz7native import ploop

    return ploop.build_info()
