"""Run simulated Bareos jobs from the command line.

``python -m fdsim`` with ``PYTHONPATH=tests``, ``python -m vz7native.fdsim`` where
vz7native is installed:

    python -m fdsim backup  --workdir W --plugin 'python3:module_path=...:module_name=...:k=v'
    python -m fdsim restore --workdir W [--jobid N] --where /tmp/restored
    python -m fdsim jobs    --workdir W
    python -m fdsim files   --workdir W --jobid N
    python -m fdsim memory  --workdir W --plugin ... --jobs 50

Every job command prints the job report (``--json``: :meth:`JobResult.as_dict`);
the exit status is 0 for T/W jobs.
"""
import argparse
import json
import sys

from . import constants as C
from .director import Director


def _common(parser):
    parser.add_argument("--workdir", required=True, help="catalog, volumes, job files")
    parser.add_argument("--bareos-version", default="23", help="20..26 or X.Y.Z (default 23)")
    parser.add_argument("--debug-level", type=int, default=0,
                        help="show plugin debug output up to this level")
    parser.add_argument("--c-locale", action="store_true",
                        help="run the FD under LC_ALL=C (ASCII filesystem encoding)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the job in this process (no child FD process)")
    parser.add_argument("--interpreter", default="auto",
                        choices=("auto", "sub-interpreter", "fresh-import"))
    parser.add_argument("--client", default="fdsim-fd")
    parser.add_argument("--lean", action="store_true",
                        help="the FD keeps its job records in files, not in memory")
    parser.add_argument("--fd-plugin-options", action="append", default=[], metavar="STRING",
                        help="a Job 'FD Plugin Options' string (repeatable)")
    parser.add_argument("--plugin-directory", metavar="DIR",
                        help="the FD's Plugin Directory (default: WORKDIR/plugins)")


def _backup_arguments(parser):
    parser.add_argument("--plugin", action="append", required=True, metavar="STRING",
                        help="a FileSet 'Plugin =' string (repeatable)")
    parser.add_argument("--run-plugin-options", metavar="STRING",
                        help="the 'run ... pluginoptions=' string")
    parser.add_argument("--level", default="F", help="F, I or D")
    parser.add_argument("--accurate", action="store_true")
    parser.add_argument("--job-name", default="backup-fdsim")
    parser.add_argument("--fileset-name", default="fdsim-fileset")
    parser.add_argument("--fileset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="FileSet option: acl, xattr, hardlinks, sparse, mtimeonly, "
                             "noatime (yes/no), accurate (letters)")


def _parse_fileset_options(items):
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit("--fileset-option %r: expected KEY=VALUE" % item)
        if key == "accurate":
            options[key] = value
        elif value.lower() in ("yes", "true", "1", "on"):
            options[key] = True
        elif value.lower() in ("no", "false", "0", "off"):
            options[key] = False
        else:
            raise SystemExit("--fileset-option %s: expected yes or no, got %r" % (key, value))
    return options


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m %s" % __package__,
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    backup = commands.add_parser("backup", help="run a backup job")
    _common(backup)
    _backup_arguments(backup)
    restore = commands.add_parser("restore", help="run a restore job")
    _common(restore)
    for job in (backup, restore):
        job.add_argument("--json", action="store_true",
                         help="print the job as JSON (status, counts, job log)")
    restore.add_argument("--jobid", type=int, action="append",
                         help="restore from these backup jobs (default: most recent chain)")
    restore.add_argument("--fileset-name", default="fdsim-fileset")
    restore.add_argument("--where")
    restore.add_argument("--regexwhere", help="!from!to! expressions")
    restore.add_argument("--plugin-options", help="the restore command's pluginoptions=")
    restore.add_argument("--replace", default="always", choices=list(C.REPLACE))
    restore.add_argument("--select", action="append", metavar="PATH_OR_GLOB",
                         help="restore this catalog entry (a directory as /d/: only itself)")
    restore.add_argument("--mark", action="append", metavar="PATH_OR_GLOB",
                         help="restore this entry, a directory with everything below it")
    restore.add_argument("--prefix-links", action="store_true")
    jobs = commands.add_parser("jobs", help="list the catalog's jobs")
    jobs.add_argument("--workdir", required=True)
    files = commands.add_parser("files", help="list a job's file records")
    files.add_argument("--workdir", required=True)
    files.add_argument("--jobid", type=int, required=True)
    files.add_argument("--json", action="store_true", help="print the catalog rows as JSON")
    memory = commands.add_parser("memory", help="RSS growth of one FD over many backups")
    _common(memory)
    _backup_arguments(memory)
    memory.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2

    if args.command in ("jobs", "files"):
        director = Director(args.workdir)
        if args.command == "jobs":
            for job in director.jobs():
                print("%(jobid)5d %(type)s %(level)s %(status)s files=%(files)s bytes=%(bytes)s "
                      "%(job)s" % job)
        elif args.json:
            print(json.dumps(director.files(args.jobid)))
        else:
            for row in director.files(args.jobid):
                print("%6d %-9s %s%s" % (row["fileindex"], C.FT_NAMES.get(row["type"], row["type"]),
                                         row["path"], "  (deleted)" if row["deleted"] else ""))
        return 0

    director = Director(args.workdir, bareos_version=args.bareos_version,
                        isolation="in-process" if args.in_process else "process",
                        interpreter=args.interpreter, c_locale=args.c_locale,
                        client=args.client, debug_level=args.debug_level, lean=args.lean,
                        **({"plugin_directory": args.plugin_directory}
                           if args.plugin_directory else {}))
    if args.command == "restore":
        result = director.restore(
            jobid=args.jobid, where=args.where, regexwhere=args.regexwhere,
            plugin_options=args.plugin_options, fd_plugin_options=args.fd_plugin_options,
            replace=args.replace, select=args.select, mark=args.mark,
            prefix_links=args.prefix_links,
            fileset_name=args.fileset_name)
    else:
        backup_kwargs = dict(
            fileset_plugin=args.plugin, fd_plugin_options=args.fd_plugin_options,
            run_plugin_options=args.run_plugin_options, level=args.level,
            accurate=args.accurate, job_name=args.job_name, fileset_name=args.fileset_name,
            fileset_options=_parse_fileset_options(args.fileset_option))
        if args.command == "memory":
            report = director.measure_memory(args.jobs, **backup_kwargs)
            print("FD RSS before %d jobs: %d KiB, after: %d KiB, growth per job: %.1f KiB "
                  "(job statuses: %s)" % (
                      report.jobs, report.rss_before_kib, report.rss_after_kib,
                      report.growth_per_job_kib,
                      ", ".join("%s=%d" % item for item in sorted(report.statuses.items()))))
            return 0 if set(report.statuses) <= {"T", "W"} else 1
        result = director.backup(**backup_kwargs)
    print(json.dumps(result.as_dict()) if args.json else result.report(debug=args.debug_level > 0))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
