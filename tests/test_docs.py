"""The documentation's examples, run or checked, so they cannot rot.

What the fenced blocks of docs/*.md are, by their info string:

``console``
    run here, as written, one command at a time (``$ `` lines; a trailing ``\\``
    continues a line), in a scratch directory holding a sandbox VZ7 host in
    ``host/`` (``web01`` running, ``db02`` stopped). A command must exit 0 unless
    the next one is ``echo $?``, whose shown output is the exit code. The lines
    shown after a command must appear in its output in that order (``...``
    stands for any text). Afterwards nothing of the examples may be mounted.
``python``
    run here, each block in a fresh interpreter, in the same scratch directory.
``bareos``
    Bareos configuration resources: every ``Plugin =`` and ``FdPluginOptions =``
    string uses only the plugin's options (``options.KNOWN``) with valid
    values; a FileSet with a Job naming it is backed up through the FD
    simulator on a sandbox host holding the containers they name.
``bconsole``
    Director console commands: keywords of ``run`` and ``restore``, and the
    ``pluginoptions=`` and ``regexwhere=`` values, are checked.
``crontab``
    a cron line: its command is checked as shell.
no info string
    shell commands for a real VZ7 host: checked with ``bash -n``, and every
    ``vz7ploop`` command must parse with the command's own argument parser.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

from host_helpers import own_run_dir
from vz7native import cli, procfs
from vz7native.host.sandbox import Sandbox
from vz7native.mount import state as mount_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PLUGIN_SRC = os.path.join(ROOT, "src", "plugin")
sys.path.insert(0, PLUGIN_SRC)
from vz7bareos import options  # noqa: E402

DOC_NAMES = ("install.md", "plugin.md", "restore.md", "cli.md")
# The documents that show commands for a real host (restore.md shows bconsole only).
HOST_DOCS = ("install.md", "plugin.md", "cli.md")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
# The Bareos console's keywords for these commands (Bareos manual, "bconsole").
BCONSOLE_KEYWORDS = {
    "run": {"job", "client", "fileset", "level", "storage", "pool", "when", "priority",
            "pluginoptions", "accurate", "yes"},
    "restore": {"jobid", "client", "restoreclient", "fileset", "where", "regexwhere", "replace",
                "file", "directory", "restorejob", "pluginoptions", "select", "all", "done",
                "current", "before", "yes", "strip_prefix", "add_prefix", "add_suffix"},
}


def read(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def blocks(name, kind):
    return [body for info, body in FENCE.findall(read(name)) if info == kind]


def logical_lines(body):
    """Lines with ``\\`` continuations joined."""
    out, pending = [], ""
    for line in body.split("\n"):
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def console_commands(body):
    """[(command, shown output lines)] of a console block."""
    found = []
    for line in logical_lines(body):
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
        else:
            raise AssertionError("console block does not start with a command: %r" % line)
    return found


def shown_matches(shown, output):
    """The shown lines appear in ``output`` in order (``...`` is any text)."""
    lines = output.split("\n")
    pos = 0
    for pattern in shown:
        if pattern.strip() in ("", "..."):
            continue
        regex = re.compile(".*?".join(re.escape(part) for part in pattern.split("...")))
        for index in range(pos, len(lines)):
            if regex.fullmatch(lines[index]):
                pos = index + 1
                break
        else:
            return "shown line %r not in the output (from line %d):\n%s" % (
                pattern, pos + 1, output)
    return None


def plugin_strings(body):
    """The values of ``Plugin =`` and ``FdPluginOptions =`` lines of a bareos block."""
    found = []
    for line in body.split("\n"):
        match = re.match(r'\s*(Plugin|Fd ?Plugin ?Options)\s*=\s*"(.*)"\s*$', line, re.I)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def check_plugin_options(text, fileset_line=False):
    """Only known options with valid values in ``python3:k=v:...``; returns the items."""
    prefix, _, rest = text.partition(":")
    assert prefix in ("python3", "python"), text
    items = options.parse(rest)
    keys = [k for k, _ in items]
    if fileset_line:
        assert keys[:2] == ["module_path", "module_name"], text
        assert dict(items)["module_name"] == "bareos-fd-vz7_ct_fs", text
        items = items[2:]
    assert options.unknown(items) == [], text
    merged = dict(items)
    if "restore" in merged:
        options.choice(merged, "restore", ("ct", "files"), {"file": "files"})
    for key in ("diskspace", "disk"):
        if key in merged:
            options.size(merged, key)
    for key in ("lock_timeout", "ct_lock_timeout", "register_timeout"):
        if key in merged:
            options.seconds(merged, key)
    for key in ("lockfile", "mount_base", "host_root"):
        if key in merged:
            options.absolute_path(merged, key)
    if "mount_backend" in merged:
        options.choice(merged, "mount_backend", ("auto", "kernel", "portable"))
    return items


# -- console and python blocks: run here --------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Per doc: a scratch directory with the sandbox host in host/ and a run dir of
    its own (so no one else's mounts are seen)."""
    made = []

    def make(name):
        work = tmp_path_factory.mktemp(name.replace(".", "-"))
        box = Sandbox.build(str(work / "host"), count=2, seed=11, running=(0,))
        made.append(box)
        return str(work), box

    with own_run_dir(os.fsencode(str(tmp_path_factory.mktemp("docs-run")))):
        yield make
    for box in made:
        box.close()


def environment():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def left_mounted(work):
    prefix = os.fsencode(os.path.realpath(work)) + b"/"
    return [m.mount_point for m in procfs.mounts()
            if m.mount_point.startswith(prefix) and b"/host/vz/root/" not in m.mount_point]


RUNNABLE = [name for name in DOC_NAMES if blocks(name, "console") or blocks(name, "python")]


@pytest.mark.root
@pytest.mark.parametrize("doc", RUNNABLE)
def test_console_and_python_examples_run_as_written(scratch, doc):
    consoles, pythons = blocks(doc, "console"), blocks(doc, "python")
    work, box = scratch(doc)
    env = environment()
    for body in consoles:
        commands = console_commands(body)
        rc = None
        for index, (command, shown) in enumerate(commands):
            if command == "echo $?":
                assert [line for line in shown if line] == [str(rc)], (doc, commands[index - 1])
                continue
            proc = subprocess.run(["bash", "-c", command], cwd=work, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True)
            rc = proc.returncode
            checked = index + 1 < len(commands) and commands[index + 1][0] == "echo $?"
            assert checked or rc == 0, "%s: `%s` exited %d:\n%s" % (doc, command, rc, proc.stderr)
            if checked:
                assert len(proc.stderr.strip().split("\n")) == 1, proc.stderr
            problem = shown_matches(shown, proc.stdout)
            assert problem is None, "%s: `%s`: %s" % (doc, command, problem)
    for body in pythons:
        proc = subprocess.run([sys.executable, "-c", body], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        assert proc.returncode == 0, "%s: python example failed:\n%s\n%s" % (doc, body,
                                                                              proc.stdout)
    assert left_mounted(work) == []
    assert mount_state.load_all(mount_state.run_dir()) == []
    for ct in box.containers:
        assert not os.path.exists(box.host.real(b"/var/lib/vz7native/backup/%s.json"
                                                % ct.uuid.encode()))


# -- blocks for a real host: checked -------------------------------------------------

@pytest.mark.parametrize("doc", HOST_DOCS)
def test_host_commands_are_shell_and_use_real_vz7ploop_options(doc):
    parser = cli.build_parser()
    bodies = blocks(doc, "") + [line.split(None, 6)[-1] for body in blocks(doc, "crontab")
                                for line in body.split("\n") if line and line[0] != "#"]
    assert bodies, "%s shows no host command" % doc
    for body in bodies:
        proc = subprocess.run(["bash", "-n", "-c", body], stderr=subprocess.PIPE,
                              universal_newlines=True)
        assert proc.returncode == 0, "%s: not shell: %s\n%s" % (doc, proc.stderr, body)
        for line in logical_lines(body):
            words = shlex.split(line, comments=True)
            if words and words[0] == "vz7ploop":
                try:
                    parser.parse_args(words[1:])
                except SystemExit:
                    pytest.fail("%s: vz7ploop does not take: %s" % (doc, line))


@pytest.mark.parametrize("doc", DOC_NAMES)
def test_bareos_resources_use_the_plugins_options(doc):
    for body in blocks(doc, "bareos"):
        for kind, text in plugin_strings(body):
            check_plugin_options(text, fileset_line=kind.lower() == "plugin")


@pytest.mark.parametrize("doc", DOC_NAMES)
def test_bconsole_commands_use_real_keywords_and_options(doc):
    for body in blocks(doc, "bconsole"):
        for line in logical_lines(body):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            words = shlex.split(line)
            assert words[0] in BCONSOLE_KEYWORDS, line
            for word in words[1:]:
                key, _, value = word.partition("=")
                assert key in BCONSOLE_KEYWORDS[words[0]], "%s: %s" % (key, line)
                if key == "pluginoptions":
                    check_plugin_options(value)
                if key == "regexwhere":
                    separator = value[0]
                    assert value.endswith(separator) and value.count(separator) == 3, value


def test_plugin_doc_gives_every_option_with_its_default():
    text = read("plugin.md")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", text, re.M))
    assert sorted(rows) == sorted(options.KNOWN)
    for key, (default, _) in options.KNOWN.items():
        shown = rows[key].strip()
        if default is None:
            assert shown in ("", "-", "none"), (key, shown)
        else:
            assert shown == "`%s`" % default, (key, shown)


def test_readme_links_the_documentation():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in DOC_NAMES:
        assert "(docs/%s)" % name in readme


# -- the FileSet and Job examples, backed up for real ---------------------------------------

def fileset_job_pairs(doc):
    """[(fileset name, [Plugin strings], [FdPluginOptions of the Job naming it])]."""
    filesets, jobs = {}, []
    for body in blocks(doc, "bareos"):
        for resource in re.findall(r"^(FileSet|Job) \{\n(.*?)^\}", body, re.M | re.S):
            kind, text = resource
            name = re.search(r'^\s*Name\s*=\s*"?([^"\n]+?)"?\s*$', text, re.M).group(1)
            strings = plugin_strings(text)
            if kind == "FileSet":
                filesets[name] = [s for k, s in strings if k.lower() == "plugin"]
            else:
                fileset = re.search(r'^\s*FileSet\s*=\s*"?([^"\n]+?)"?\s*$', text, re.M)
                jobs.append((fileset.group(1) if fileset else None,
                             [s for k, s in strings if k.lower() != "plugin"]))
    return [(name, filesets[name], job_options) for name, job_options in jobs
            if name in filesets]


def for_this_machine(line, host_root):
    """A FileSet line as written, with the plugin where this tree has it and the
    sandbox as the host."""
    line = line.replace("module_path=/usr/lib64/bareos/plugins", "module_path=" + PLUGIN_SRC)
    return line + ":host_root=" + host_root


def with_home_admin(path, seed):
    from vz7native.host.tree import write_file, write_tree
    write_tree(path, seed)
    os.makedirs(os.path.join(path, b"home/admin"))
    write_file(os.path.join(path, b"home/admin/.bash_history"), b"ls\n", uid=1001, gid=1001)


@pytest.fixture(scope="module")
def example_host(tmp_path_factory):
    """A sandbox host with every container the FileSet and Job examples name (each
    with a /home/admin, which the seed's Job excludes), alternately running and
    stopped, and a run dir of its own."""
    mentioned = set()
    for _, lines, job_options in fileset_job_pairs("plugin.md"):
        for text in lines + job_options:
            merged = dict(options.parse(text.partition(":")[2]))
            if "uuid" in merged:
                mentioned.add((merged["name"], options.strip_quotes(merged["uuid"])))
    work = tmp_path_factory.mktemp("examples")
    with own_run_dir(os.fsencode(str(work / "run"))), Sandbox.create(str(work / "host")) as box:
        for index, (name, uuid) in enumerate(sorted(mentioned)):
            ct = box.add_container(uuid, name, seed=index, tree_builder=with_home_admin)
            box.stage(ct, "running" if index % 2 == 0 else "stopped")
        yield box


@pytest.mark.root
@pytest.mark.parametrize("version", [20, 23, 25])
def test_fileset_and_job_examples_back_up_as_written(example_host, tmp_path, version):
    from fdsim import Director

    pairs = fileset_job_pairs("plugin.md")
    assert [name for name, _, _ in pairs][:1] == ["v7_ct"], "the seed's FileSet and Job"
    root = os.fsdecode(example_host.root)
    for number, (fileset, lines, job_options) in enumerate(pairs):
        director = Director(str(tmp_path / ("fd%d" % number)), bareos_version=version)
        result = director.backup([for_this_machine(line, root) for line in lines],
                                 fd_plugin_options=job_options, fileset_name=fileset)
        assert result.status == "T", result.report()
        paths = [row["path"] for row in director.files(result.jobid)]
        for text in lines + job_options:
            merged = dict(options.parse(text.partition(":")[2]))
            if "uuid" in merged:
                root_of_ct = "/mnt/bareos/%s/" % options.strip_quotes(merged["uuid"])
                assert root_of_ct + "etc/passwd" in paths
            for excluded in options.comma_list(merged, "excluded_backup_paths"):
                assert not any(p.startswith("/mnt/bareos/") and
                               p.split("/", 4)[-1].startswith(excluded.lstrip("/"))
                               for p in paths), excluded
    assert mount_state.load_all(mount_state.run_dir()) == []
