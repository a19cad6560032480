"""Job outcomes (contract §13): the status each message type and each failure
gives, which events still reach a failed job, and the bareosfd functions."""
import os

import pytest

from fdsim.testing import fdsim_plugin, make_director  # noqa: F401
from fdsim.testing import virtual_plugin

MESSAGE = virtual_plugin("""
def __init__(self, plugindef):
    VirtualPlugin.__init__(self, plugindef)
    bareosfd.RegisterEvents([bareosfd.bEventJobEnd, bareosfd.bEventEndBackupJob,
                             bareosfd.bEventEndRestoreJob, bareosfd.bEventStartBackupJob])

def start_backup_file(self, savepkt):
    kind = self.options.get("type")
    if kind:
        bareosfd.JobMessage(getattr(bareosfd, kind), "the plugin says %s\\n" % kind)
    return VirtualPlugin.start_backup_file(self, savepkt)
""")


@pytest.mark.parametrize("mtype, status", [
    ("M_FATAL", "f"), ("M_ERROR", "W"), ("M_WARNING", "T"), ("M_INFO", "T"), ("M_SAVED", "T")])
def test_status_per_message_type(tmp_path, fdsim_plugin, mtype, status):
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(MESSAGE, type=mtype))
    assert result.status == status
    assert (mtype, "python3-fd-mod: the plugin says %s" % mtype) in [tuple(e) for e in result.log]
    assert result.status_text == {"T": "OK", "W": "OK -- with warnings", "f": "Fatal error"}[status]
    assert result.ok == (status != "f")


def test_job_message_text_carries_the_python3_fd_prefix(tmp_path, fdsim_plugin):
    """The job log shows a plugin's JobMessage after ``python3-fd-mod: `` (§13);
    plugin_messages() gives the plugin's own text back."""
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(MESSAGE, type="M_WARNING"))
    assert result.log[0] == ("M_WARNING", "python3-fd-mod: the plugin says M_WARNING")
    assert result.plugin_messages("M_WARNING") == ["the plugin says M_WARNING"]
    assert result.plugin_messages("M_INFO") == []


def test_events_after_a_fatal_error(tmp_path, fdsim_plugin):
    """Only End{Backup,Restore}Job reach a failed job; JobEnd never (§2.3 step 10)."""
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(MESSAGE, type="M_FATAL"))
    assert result.files == 0  # the save loop stops once the job is failed
    assert result.calls[-2:] == ["end_backup_file", "handle_plugin_event(4)"]
    assert ("bEventJobEnd", False) in [tuple(e) for e in result.events]
    ok = director.backup(fdsim_plugin(MESSAGE, name="fine"))
    assert ok.calls[-2:] == ["handle_plugin_event(4)", "handle_plugin_event(2)"]


def test_abort_message_takes_the_fd_down(tmp_path, fdsim_plugin):
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(MESSAGE, type="M_ABORT"))
    assert result.status == "f" and "terminates the daemon" in result.crashed


@pytest.mark.parametrize("argument, error", [("b'bytes'", "TypeError"),
                                             ("'K\\udcdcBLER'", "UnicodeEncodeError")])
def test_job_message_rejects_bytes_and_surrogates(tmp_path, fdsim_plugin, argument, error):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    try:
        bareosfd.JobMessage(bareosfd.M_INFO, %s)
    except Exception as exc:
        bareosfd.JobMessage(bareosfd.M_INFO, "raised " + type(exc).__name__)
    try:
        bareosfd.DebugMessage(100, %s)
    except Exception as exc:
        bareosfd.JobMessage(bareosfd.M_INFO, "raised " + type(exc).__name__)
    return VirtualPlugin.start_backup_file(self, savepkt)
""" % (argument, argument))
    director = make_director(tmp_path / "fdsim")
    result = director.backup(fdsim_plugin(source))
    assert result.status == "T"  # caught by the plugin: the FD is not hurt
    assert result.plugin_messages() == ["raised " + error] * 2


def test_debug_messages_follow_the_debug_level(tmp_path, fdsim_plugin):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    bareosfd.DebugMessage(100, "level 100\\n")
    bareosfd.DebugMessage(200, "level 200\\n")
    return VirtualPlugin.start_backup_file(self, savepkt)
""")
    director = make_director(tmp_path / "fdsim")
    line = fdsim_plugin(source)
    quiet = director.backup(line)
    assert quiet.debug == []
    chatty = director.backup(line, debug_level=150)
    texts = [d.text for d in chatty.debug]
    assert "python3-fd-mod: level 100" in texts and "python3-fd-mod: level 200" not in texts
    assert "python3-fd: Successfully loaded module with name testplugin" in texts


BACKUP_COMMAND = virtual_plugin("""
def parse_plugin_definition(self, plugindef):
    VirtualPlugin.parse_plugin_definition(self, plugindef)
    self.calls = getattr(self, "calls", 0) + 1
    return bareosfd.bRC_Error if self.calls > 1 else bareosfd.bRC_OK
""")


@pytest.mark.parametrize("version, status", [(22, "T"), (23, "E")])
def test_failed_parse_at_backup_command(tmp_path, fdsim_plugin, version, status):
    """The Plugin line is aborted: silently on 20-22, as an error on 23+ (§2)."""
    director = make_director(tmp_path / "fdsim", bareos_version=version)
    result = director.backup(fdsim_plugin(BACKUP_COMMAND))
    assert (result.status, result.files) == (status, 0)
    assert "start_backup_file" not in result.calls


def test_start_backup_job_error_does_not_abort(tmp_path, fdsim_plugin):
    source = virtual_plugin("""
def __init__(self, plugindef):
    VirtualPlugin.__init__(self, plugindef)
    bareosfd.RegisterEvents([bareosfd.bEventStartBackupJob])

def handle_plugin_event(self, event):
    return bareosfd.bRC_Error
""")
    result = make_director(tmp_path / "fdsim").backup(fdsim_plugin(source))
    assert (result.status, result.files) == ("T", 1)


def test_module_functions(tmp_path, fdsim_plugin):
    source = virtual_plugin("""
def start_backup_file(self, savepkt):
    m = bareosfd
    bareosfd.JobMessage(m.M_INFO, "count=%d seen=%d register=%d,%d fileset=%d" % (
        m.GetInstanceCount(), m.SetValue(m.bVarFileSeen, "/x"),
        m.RegisterEvents([0, 99]), m.RegisterEvents([m.bEventEndBackupJob, 77]),
        m.AddExclude("/tmp")))
    bareosfd.JobMessage(m.M_INFO, "unknown var=%r bitmap=%d" % (
        m.GetValue(999), m.SetSeenBitmap(True)))
    rc = VirtualPlugin.start_backup_file(self, savepkt)
    # CheckChanges gets no statp from the C code: an all-zero stat is compared
    savepkt.save_time = 10
    unchanged = m.CheckChanges(savepkt)
    savepkt.save_time = 0
    bareosfd.JobMessage(m.M_INFO, "check=%d,%d accept=%d" % (
        unchanged, m.CheckChanges(savepkt), m.AcceptFile(savepkt)))
    return rc
""")
    result = make_director(tmp_path / "fdsim").backup(fdsim_plugin(source))
    assert result.plugin_messages()[:3] == ["count=1 seen=2 register=2,0 fileset=0",
                                     "unknown var=None bitmap=2", "check=5,0 accept=0"]
    assert result.fileset_calls == [["AddExclude", "/tmp"]]
    assert "handle_plugin_event(4)" in result.calls


def test_a_volume_torn_by_a_killed_fd_reads_up_to_its_last_whole_record(tmp_path):
    from fdsim import volume
    path = str(tmp_path / "job.vol")
    with volume.VolumeWriter(path) as writer:
        writer.write(2, 1, b"first")
        writer.write(2, 2, b"second record")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)  # the FD died writing the second record
    assert [r.payload for r in volume.read_records(path, torn_tail=True)] == [b"first"]
    with pytest.raises(volume.VolumeError):
        list(volume.read_records(path))
