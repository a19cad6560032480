"""The golden callback orders of contract §2.4 (Bareos systemtest
``py3plug-fd-basic``), reproduced by a plugin written like the systemtest's:
module-level entry points forwarding to an object that reports each call."""
import os

import pytest

from fdsim.testing import make_director, plugin_line

GOLDEN_BACKUP = [
    "__init__('option=value:')", "parse_plugin_definition('option=value:')",
    "handle_plugin_event(16)", "handle_plugin_event(3)",
    "parse_plugin_definition('option=value:')", "start_backup_file", "plugin_io(open)",
    "plugin_io(read)", "plugin_io(close)", "get_acl", "get_xattr", "end_backup_file",
    "handle_plugin_event(4)", "handle_plugin_event(2)"]
GOLDEN_RESTORE = [
    "__init__('option=value:')", "parse_plugin_definition('option=value:')",
    "start_restore_file", "create_file", "plugin_io(open)", "set_file_attributes",
    "plugin_io(close)", "set_acl", "set_xattr", "end_restore_file", "handle_plugin_event(2)"]
LINE = plugin_line("golden_order", option="value")


@pytest.mark.parametrize("version", [20, 21, 22, 23, 24, 25, 26])
def test_golden_backup_and_restore_order(tmp_path, version):
    director = make_director(tmp_path / "fdsim", bareos_version=version)
    backup = director.backup(LINE)
    assert backup.status == "T"
    assert backup.plugin_messages("M_INFO") == GOLDEN_BACKUP

    where = str(tmp_path / "restored")
    restore = director.restore(where=where)
    assert restore.status == "T"
    assert restore.plugin_messages("M_INFO") == GOLDEN_RESTORE
    # CF_CORE: the core made the parent directories and opened through the plugin
    assert os.path.isfile(os.path.join(where, "golden", "file.txt"))


def test_trace_is_the_same_order_seen_from_the_core(tmp_path):
    """The simulator's own trace of Python calls matches the plugin's report
    (without __init__, which is inside load_bareos_plugin)."""
    director = make_director(tmp_path / "fdsim")
    backup = director.backup(LINE)
    as_traced = [call.replace("IO_OPEN", "open").replace("IO_READ", "read")
                 .replace("IO_CLOSE", "close") for call in backup.calls]
    assert as_traced == ["load_bareos_plugin('option=value:')"] + GOLDEN_BACKUP[1:]
    restore = director.restore(where=str(tmp_path / "restored"))
    assert restore.calls[0] == "load_bareos_plugin('option=value:')"
    assert len(restore.calls) == len(GOLDEN_RESTORE)


def test_events_python_never_sees(tmp_path):
    """JobStart, Level (and Since) fire before the module is loaded; a restore
    without module-loading plugin options never shows StartRestoreJob (§2.2)."""
    director = make_director(tmp_path / "fdsim")
    backup = director.backup(LINE)
    undelivered = [e.event for e in backup.events if not e.delivered]
    assert undelivered[:2] == ["bEventJobStart", "bEventLevel"]
    restore = director.restore(where=str(tmp_path / "restored"))
    assert ("bEventStartRestoreJob", False) in [tuple(e) for e in restore.events]
    assert "bEventJobStart" not in restore.delivered_events()
