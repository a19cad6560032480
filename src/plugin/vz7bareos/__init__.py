"""The Bareos file-daemon plugin for Virtuozzo 7 containers, on top of vz7native.

``bareos-fd-vz7_ct_fs.py`` is the module Bareos loads; it hands every entry
point to :func:`entry_points`. Rooms: ``options`` (what the plugin is told),
``names`` (bytes names as Bareos-safe text), ``attrs`` (what a StatPacket cannot
hold), ``plugin`` (one job: events, messages, the backup loop), ``backup`` (one
container's backup as packets), ``restore`` (restores).
"""

ENTRY_POINTS = (
    "parse_plugin_definition", "handle_plugin_event", "start_backup_file", "end_backup_file",
    "plugin_io", "get_acl", "get_xattr", "check_file", "restore_object_data",
    "start_restore_file", "create_file", "set_file_attributes", "end_restore_file",
    "set_acl", "set_xattr")


def entry_points(namespace):
    """Define the module-level functions python3-fd calls, in ``namespace`` (the
    entry module's globals). The job's state lives in this closure: one per
    interpreter, i.e. per job."""
    import bareosfd
    from vz7bareos.plugin import Job, _describe_error

    jobs = []

    def load_bareos_plugin(plugindef):
        del jobs[:]
        try:
            jobs.append(Job(bareosfd))
        except Exception as e:
            bareosfd.JobMessage(bareosfd.M_FATAL, "vz7: cannot start: %s\n" % _describe_error(e))
            return bareosfd.bRC_Error
        return bareosfd.bRC_OK

    namespace["load_bareos_plugin"] = load_bareos_plugin

    def forward(name):
        def entry_point(*args):
            if not jobs:
                return bareosfd.bRC_Error
            job = jobs[0]
            try:
                return getattr(job, name)(*args)
            except Exception as e:
                job.fatal("%s failed: %s: %s" % (name, type(e).__name__, _describe_error(e)))
                return bareosfd.bRC_Error
        entry_point.__name__ = name
        return entry_point

    for name in ENTRY_POINTS:
        namespace[name] = forward(name)
