"""The python3-fd C layer: Plugin= strings and option merging (§1, §2.3, §2.5,
§12), module loading, and the error rules of the entry points (§2)."""

from fdsim.testing import fdsim_director, fdsim_plugin, make_director, plugin_line  # noqa: F401

RECORDER = """
    import bareosfd
    from virtual import VirtualPlugin, entry_points

    class Recorder(VirtualPlugin):
        def __init__(self, plugindef):
            VirtualPlugin.__init__(self, plugindef)
            bareosfd.JobMessage(bareosfd.M_INFO, "load %s" % plugindef)

        def parse_plugin_definition(self, plugindef):
            bareosfd.JobMessage(bareosfd.M_INFO, "parse %s" % plugindef)
            return VirtualPlugin.parse_plugin_definition(self, plugindef)

    entry_points(globals(), Recorder)
"""


def test_options_string_without_module_path_and_name(fdsim_director, fdsim_plugin):
    line = fdsim_plugin(RECORDER) + r":a=1:b=x\:y"
    line = line.replace("module_path=", "Module_Path=").replace("module_name=", "MODULE_NAME=")
    result = fdsim_director.backup(line)
    assert result.status == "T"
    assert result.plugin_messages()[0] == r"load a=1:b=x\:y:"  # trailing colon, \: kept (§1)
    assert result.calls[0] == r"load_bareos_plugin('a=1:b=x\\:y:')"


def test_a_second_module_name_in_one_string_replaces_the_first(fdsim_director, fdsim_plugin):
    result = fdsim_director.backup(fdsim_plugin(RECORDER) + ":module_name=nosuchmodule")
    assert result.status == "f"
    assert "No module named 'nosuchmodule'" in result.messages("M_FATAL")[0]


def test_python_prefix_reaches_python3_fd(fdsim_director, fdsim_plugin):
    line = fdsim_plugin(RECORDER).replace("python3:", "python:", 1)
    result = fdsim_director.backup(line)
    assert result.status == "T" and result.files == 1
    restore = fdsim_director.restore(where="/tmp/unused-where")
    assert restore.calls[1:3] == ["parse_plugin_definition('')", "start_restore_file"]


def test_other_plugin_names_are_not_python3_fd(fdsim_director, fdsim_plugin):
    line = fdsim_plugin(RECORDER).replace("python3:", "pytho:", 1)
    result = fdsim_director.backup(line)
    assert result.status == "f"
    assert result.messages("M_FATAL") == ['Command plugin "%s" not found.' % line]
    assert result.calls == []


def test_module_name_with_dashes(fdsim_director, fdsim_plugin):
    line = fdsim_plugin(RECORDER, name="bareos-fd-dashed")
    assert fdsim_director.backup(line).status == "T"


def test_argument_without_value_is_fatal(fdsim_director, fdsim_plugin):
    result = fdsim_director.backup(fdsim_plugin(RECORDER) + ":novalue")
    assert result.status == "f"
    assert result.messages("M_FATAL") == ["python3-fd: Illegal argument novalue without value"]


def test_option_order_in_a_backup(fdsim_director, fdsim_plugin):
    """FileSet string at load, run pluginoptions, each FD Plugin Options string,
    the FileSet string again before the first file (§12)."""
    line = fdsim_plugin(RECORDER, opt="fileset")
    result = fdsim_director.backup(line, run_plugin_options="python3:opt=run",
                                   fd_plugin_options=["python3:opt=job1", "python3:opt=job2"])
    assert [m for m in result.plugin_messages() if m.startswith("parse")] == [
        "parse opt=fileset:", "parse opt=run:", "parse opt=job1:", "parse opt=job2:",
        "parse opt=fileset:"]


def test_several_plugin_lines_share_one_module(fdsim_director, fdsim_plugin):
    counting = """
        import bareosfd
        from virtual import VirtualPlugin, entry_points
        loads = 0

        class Counting(VirtualPlugin):
            def __init__(self, plugindef):
                global loads
                loads += 1
                VirtualPlugin.__init__(self, plugindef)

            def parse_plugin_definition(self, plugindef):
                self.options = {}
                VirtualPlugin.parse_plugin_definition(self, plugindef)
                self.pending = None
                bareosfd.JobMessage(bareosfd.M_INFO, "loads=%d %s" % (loads, plugindef))
                return bareosfd.bRC_OK

        entry_points(globals(), Counting)
    """
    first = fdsim_plugin(counting, files="/line1")
    second = fdsim_plugin(counting, name="othermodule", files="/line2")
    result = fdsim_director.backup([first, second])
    assert result.status == "T" and result.files == 2
    assert result.plugin_messages() == ["loads=1 files=/line1:", "loads=1 files=/line2:",
                                 "loads=1 files=/line1:", "loads=1 files=/line2:"]
    assert [r["path"] for r in fdsim_director.files(result.jobid)] == ["/line1", "/line2"]


def test_missing_entry_point_is_an_error_per_call(tmp_path, fdsim_plugin):
    """No get_acl: bRC_Error, one M_ERROR per call, the job ends W (§2 table)."""
    director = make_director(tmp_path / "fdsim", debug_level=150)
    source = RECORDER.replace("entry_points(globals(), Recorder)",
                              "entry_points(globals(), Recorder, skip=('get_acl',))")
    result = director.backup(fdsim_plugin(source, files="/a,/b"))
    assert result.status == "W" and result.files == 2
    assert len(result.messages("M_ERROR")) == 2
    assert ("python3-fd-mod: Failed to find function named get_acl()"
            in [d.text for d in result.debug])
    assert [t.rc for t in result.trace if t.call == "get_acl"] == [2, 2]


def test_backup_without_acl_and_xattr_entry_points_logs_what_the_fd_logs(tmp_path,
                                                                          fdsim_plugin):
    """One empty error line per missing call, then one warning with the total for
    ACLs and one for XATTRs; the job ends W (§13)."""
    director = make_director(tmp_path / "fdsim")
    source = RECORDER.replace("entry_points(globals(), Recorder)",
                              "entry_points(globals(), Recorder, skip=('get_acl', 'get_xattr'))")
    result = director.backup(fdsim_plugin(source, files="/a,/b"))
    assert result.status == "W" and result.files == 2
    assert [tuple(e) for e in result.log if e.type != "M_INFO"] == [("M_ERROR", "")] * 4 + [
        ("M_WARNING", "Encountered 2 acl errors while doing backup"),
        ("M_WARNING", "Encountered 2 xattr errors while doing backup")]


def test_exception_is_fatal_with_traceback(fdsim_director, fdsim_plugin):
    source = RECORDER + """
    def start_backup_file(savepkt):
        raise ValueError("boom")
    """
    result = fdsim_director.backup(fdsim_plugin(source))
    assert result.status == "f"
    fatal = result.messages("M_FATAL")
    assert fatal[0].startswith("bareosfd: Traceback (most recent call last):")
    assert fatal[0].rstrip().endswith("ValueError: boom")
    assert "python_fd.py" not in fatal[0]  # no simulator frames in the traceback


def test_non_int_return_is_minus_one_and_poisons_the_next_callback(fdsim_director, fdsim_plugin):
    source = RECORDER + """
    def handle_plugin_event(event):
        return None

    def parse_plugin_definition(plugindef):
        import time
        time.time()
        return bareosfd.bRC_OK
    """
    source = source.replace("entry_points(globals(), Recorder)",
                            "entry_points(globals(), Recorder)\n"
                            "    bareosfd_register = None")
    source = source.replace(
        "            bareosfd.JobMessage(bareosfd.M_INFO, \"load %s\" % plugindef)",
        "            bareosfd.JobMessage(bareosfd.M_INFO, \"load %s\" % plugindef)\n"
        "            bareosfd.RegisterEvents([bareosfd.bEventStartBackupJob])")
    result = fdsim_director.backup(fdsim_plugin(source))
    assert ("handle_plugin_event(3)", -1) in [(t.call, t.rc) for t in result.trace]
    assert result.status == "f"
    fatal = result.messages("M_FATAL")[0]
    assert "SystemError: <built-in function time> returned a result with an exception set" in fatal
    assert "TypeError" in fatal


def test_load_returning_error_still_counts_as_loaded(fdsim_director, fdsim_plugin):
    source = RECORDER + """
    _load = load_bareos_plugin

    def load_bareos_plugin(plugindef):
        _load(plugindef)
        return bareosfd.bRC_Error
    """
    result = fdsim_director.backup(fdsim_plugin(source))
    # parse_plugin_definition is skipped this time only; the module stays loaded
    assert result.calls[:2] == ["load_bareos_plugin('')", "parse_plugin_definition('')"]
    assert result.calls.count("load_bareos_plugin('')") == 1


def test_load_raising_leaves_the_module_unloaded_and_fails_the_job(fdsim_director,
                                                                   fdsim_plugin):
    source = RECORDER + """
    _load = load_bareos_plugin
    attempts = []

    def load_bareos_plugin(plugindef):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("not yet")
        return _load(plugindef)
    """
    line = fdsim_plugin(source)
    result = fdsim_director.backup([line, line])
    # The traceback is an M_FATAL: the job is failed, so the events that would
    # retry the load (the second Plugin= line, BackupCommand) never come.
    assert result.status == "f"
    assert [(t.call, t.rc) for t in result.trace] == [("load_bareos_plugin('')", 2)]
    assert "RuntimeError: not yet" in result.messages("M_FATAL")[0]
    assert result.delivered_events() == []


def test_each_job_imports_the_module_afresh(fdsim_director, fdsim_plugin):
    source = RECORDER + """
    jobs_seen = []

    def handle_plugin_event(event):
        jobs_seen.append(bareosfd.GetValue(bareosfd.bVarJobId))
        bareosfd.JobMessage(bareosfd.M_INFO, "seen %r" % jobs_seen)
        return bareosfd.bRC_OK

    _load = load_bareos_plugin

    def load_bareos_plugin(plugindef):
        bareosfd.RegisterEvents([bareosfd.bEventJobEnd])
        return _load(plugindef)
    """
    line = fdsim_plugin(source)
    first = fdsim_director.backup(line)
    second = fdsim_director.backup(line)
    assert first.plugin_messages()[-1] == "seen [%d]" % first.jobid
    assert second.plugin_messages()[-1] == "seen [%d]" % second.jobid


def test_restore_pluginoptions_are_merged_before_the_stored_options(fdsim_director,
                                                                     fdsim_plugin):
    line = fdsim_plugin(RECORDER, opt="fileset")
    fdsim_director.backup(line)
    restore = fdsim_director.restore(where="/tmp/unused", plugin_options="python3:opt=restore")
    assert restore.plugin_messages()[:2] == ["load opt=restore:opt=fileset:",
                                      "parse opt=restore:opt=fileset:"]
    # a restore Job with its own FD Plugin Options drops them entirely (§13)
    restore = fdsim_director.restore(where="/tmp/unused", plugin_options="python3:opt=restore",
                                     fd_plugin_options=["python3:opt=job"])
    assert restore.plugin_messages()[0] == "load opt=job:opt=fileset:"


def test_restore_pluginoptions_with_module_name_load_early(fdsim_director, fdsim_plugin):
    line = fdsim_plugin(RECORDER, opt="fileset")
    fdsim_director.backup(line)
    module_part = line.split(":opt=")[0]
    restore = fdsim_director.restore(where="/tmp/unused", plugin_options=module_part + ":x=1")
    assert restore.calls[:2] == ["load_bareos_plugin('x=1:')", "parse_plugin_definition('x=1:')"]
    assert ("bEventStartRestoreJob", False) in [tuple(e) for e in restore.events]
