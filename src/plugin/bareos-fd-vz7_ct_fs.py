"""Bareos file-daemon plugin: backup and restore of Virtuozzo 7 containers.

FileSet:
    Plugin = "python3:module_path=/usr/lib64/bareos/plugins:module_name=bareos-fd-vz7_ct_fs:..."

Options and recipes: docs/plugin.md. The work is done by the ``vz7bareos``
package beside this file and the ``vz7native`` library.
"""
from vz7bareos import entry_points

entry_points(globals())
