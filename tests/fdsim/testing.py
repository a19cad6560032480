"""Helpers for tests that run plugins in the simulator.

    from fdsim.testing import make_director, write_plugin, plugin_line, virtual_plugin

``plugin_line("mymodule", module_path="/src/plugin", root="/data")`` builds a
FileSet ``Plugin =`` string; ``write_plugin(dir, "name", source)`` writes a test
plugin module and returns its Plugin= string.  The pytest fixtures
``fdsim_director`` (a Director with an in-process FD on Bareos 23 whose plugin
directory holds :mod:`virtual`) and ``fdsim_plugin`` (``write_plugin`` into the
test's tmp_path) are imported by ``tests/test_fdsim_*.py``.
"""
import os
import textwrap

import pytest

from .director import Director

PLUGIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")


def plugin_line(module_name, module_path=PLUGIN_DIR, prefix="python3", **options):
    """A ``Plugin =`` string: ``prefix:module_path=..:module_name=..:k=v...``."""
    parts = ["%s:module_path=%s:module_name=%s" % (prefix, module_path, module_name)]
    parts += ["%s=%s" % item for item in options.items()]
    return ":".join(parts)


def write_plugin(directory, name, source, **options):
    """Write ``<directory>/<name>.py`` (dedented) and return its Plugin= string."""
    directory = str(directory)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    with open(os.path.join(directory, name + ".py"), "w") as f:
        f.write(textwrap.dedent(source))
    return plugin_line(name, directory, **options)


def virtual_plugin(body, imports="import os"):
    """Source of a test plugin: class ``P(VirtualPlugin)`` (see plugins/virtual.py)
    with ``body`` as its class body, and the module's entry points."""
    return ("import bareosfd\n%s\nfrom virtual import VirtualPlugin, entry_points\n\n"
            "class P(VirtualPlugin):\n%s\n\nentry_points(globals(), P)\n"
            % (imports, "\n".join("    " + line for line in body.strip("\n").splitlines())))


def make_director(workdir, bareos_version=23, isolation="in-process", **kwargs):
    """A Director whose FD plugin directory is ``tests/fdsim/plugins`` (so test
    plugins can ``import virtual``), by default running jobs in this process."""
    kwargs.setdefault("plugin_directory", PLUGIN_DIR)
    return Director(str(workdir), bareos_version=bareos_version, isolation=isolation, **kwargs)


@pytest.fixture
def fdsim_director(tmp_path):
    return make_director(tmp_path / "fdsim")


@pytest.fixture
def fdsim_plugin(tmp_path):
    def write(source, name="testplugin", **options):
        return write_plugin(tmp_path / "plugin", name, source, **options)
    return write
