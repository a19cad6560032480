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


def build_info():
    """What the compiled libploop binding was built against (a dict of str/bool).

    Keys: ``package_version``, ``libploop_version`` (as pkg-config reported it,
    may be empty), ``header`` (path of libploop.h), ``flavor`` (``"vz7"`` for a
    7.0.x header, ``"openvz"`` for 1.x), ``read_dd``, ``fslabel``, ``cbt``.
    """
    from vz7native import ploop

    return ploop.build_info()
