"""Packaging: the RPM spec (parsed, the source RPM and the binary RPMs built with
Debian's rpmbuild against this machine's libploop) and `pip install .`, each from
a copy of the source tree so the work tree is left as it is. Both install the FD
simulator as vz7native.fdsim, which runs there (and vz7ploop selftest with it)."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

import vz7native
from conftest import require
from host_helpers import own_run_dir
from vz7native import selftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "packaging", "vz7native.spec")
PLUGIN_DIR = "/usr/lib64/bareos/plugins"
TARBALL = "vz7native-%s.tar.gz" % vz7native.__version__
# What the simulator is made of, as installed: modules, its README, its test plugins.
SIMULATOR_FILES = ("__init__.py", "__main__.py", "director.py", "fdprocess.py", "jobrun.py",
                   "README.md", "plugins/reference_tree.py", "plugins/virtual.py")


def check_output(argv, **kw):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, **kw)
    assert proc.returncode == 0, "%s exited %d:\n%s" % (" ".join(argv), proc.returncode,
                                                        proc.stdout[-4000:])
    return proc.stdout


def need_rpm():
    require(shutil.which("rpmbuild") is not None and shutil.which("rpmspec") is not None,
            "needs rpmbuild and rpmspec (apt-get install rpm)")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the source tree: the files git tracks or would track."""
    copy = str(tmp_path_factory.mktemp("source") / "tree")
    names = check_output(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT)
    for name in filter(None, names.split("\0")):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.join(copy, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(copy, name))
    return copy


@pytest.fixture(scope="module")
def rpm_top(tmp_path_factory, source):
    """An rpmbuild top dir whose SOURCES holds the source tarball (setup.py sdist)."""
    need_rpm()
    top = str(tmp_path_factory.mktemp("rpmbuild"))
    sources = os.path.join(top, "SOURCES")
    check_output([sys.executable, "setup.py", "-q", "sdist", "-d", sources], cwd=source,
                 env=dict(os.environ, LANG="C", LC_ALL="C"))
    assert os.path.isfile(os.path.join(sources, TARBALL))
    return top


def rpmbuild(top, *args):
    """rpmbuild with ``args`` (the spec or the tarball last) in the top dir ``top``."""
    return check_output(["rpmbuild", "--define", "_topdir " + top] + list(args),
                        env=dict(os.environ, LANG="C", LC_ALL="C"))


def test_the_spec_names_this_version_and_both_packages():
    need_rpm()
    out = check_output(["rpmspec", "-q", "--qf", "%{NAME} %{VERSION}\n", SPEC])
    assert out.split("\n")[:2] == ["vz7native " + vz7native.__version__,
                                   "vz7native-bareos-plugin " + vz7native.__version__]


def test_the_source_rpm_builds_from_the_tarball_and_asks_for_ploop_devel(rpm_top):
    # rpmbuild -ts: the spec is found inside the tarball (docs/install.md's rpmbuild -ta)
    out = rpmbuild(rpm_top, "-ts", os.path.join(rpm_top, "SOURCES", TARBALL))
    srpm = out.strip().split("Wrote: ")[-1].strip()
    assert srpm.endswith("vz7native-%s-1.src.rpm" % vz7native.__version__)
    files = check_output(["rpm", "-qpl", srpm]).split()
    assert sorted(files) == [TARBALL, "vz7native.spec"]
    requires = check_output(["rpm", "-qp", "--requires", srpm])
    for needed in ("ploop-devel", "gcc", "libffi-devel"):
        assert needed in requires.split("\n") or any(
            line.startswith(needed + " ") for line in requires.split("\n")), requires


def test_the_binary_rpms_build_and_hold_the_library_the_command_and_the_plugin(rpm_top):
    """The whole %build/%install/%files of the spec, compiled against this
    machine's libploop with the Python running the tests as the system Python 3
    (--nodeps: Debian has no ploop-devel package name)."""
    rpmbuild(rpm_top, "-bb", "--nodeps", "--define", "debug_package %{nil}",
             "--define", "__python3 " + sys.executable, SPEC)
    built = os.path.join(rpm_top, "RPMS", "x86_64")
    library, plugin = ("%s-%s-1.x86_64.rpm" % (name, vz7native.__version__)
                       for name in ("vz7native", "vz7native-bareos-plugin"))
    assert sorted(os.listdir(built)) == sorted([library, plugin])
    files = check_output(["rpm", "-qpl", os.path.join(built, library)]).split("\n")
    assert "/usr/bin/vz7ploop" in files
    for module in ("_ploop", "_walk"):
        assert any("/vz7native/%s." % module in f and f.endswith(".so") for f in files), files
    assert any(f.endswith("/vz7native/backup.py") for f in files)
    assert "/usr/share/doc/vz7native-%s/plugin.md" % vz7native.__version__ in files
    assert not any("vz7bareos" in f for f in files)
    for name in SIMULATOR_FILES:
        assert any(f.endswith("/vz7native/fdsim/" + name) for f in files), name
    files = check_output(["rpm", "-qpl", os.path.join(built, plugin)]).split("\n")
    assert PLUGIN_DIR + "/bareos-fd-vz7_ct_fs.py" in files
    # where vz7ploop selftest looks for it by default
    assert selftest.DEFAULT_PLUGIN_DIR == PLUGIN_DIR.encode()
    for name in ("__init__", "options", "names", "attrs", "plugin", "backup", "restore"):
        assert "%s/vz7bareos/%s.py" % (PLUGIN_DIR, name) in files
    requires = check_output(["rpm", "-qp", "--requires", os.path.join(built, plugin)])
    assert "bareos-filedaemon-python3-plugin" in requires

    # What the library package holds works: its compiled binding loads and runs.
    unpacked = os.path.join(rpm_top, "unpacked")
    os.mkdir(unpacked)
    cpio = subprocess.Popen(["cpio", "-idm", "--quiet"], cwd=unpacked, stdin=subprocess.PIPE)
    subprocess.run(["rpm2cpio", os.path.join(built, library)], stdout=cpio.stdin, check=True)
    cpio.stdin.close()
    assert cpio.wait() == 0
    package = [f for f in files_of(unpacked) if f.endswith("/vz7native/__init__.py")][0]
    out = check_output([sys.executable, "-I", "-c",
                        "import sys; sys.path.insert(0, sys.argv[1]); import vz7native; "
                        "print(vz7native.__file__); print(vz7native.build_info()['header'])",
                        os.path.dirname(os.path.dirname(package))])
    assert out.split("\n")[0] == package
    assert out.split("\n")[1].endswith("ploop/libploop.h")
    # ... and so does its simulator, under its installed name
    simulator_runs(os.path.dirname(os.path.dirname(package)), os.path.join(rpm_top, "sim"))


def files_of(top):
    return [os.path.join(d, name) for d, _, names in os.walk(top) for name in names]


def simulator_runs(site_dir, work):
    """`python -m vz7native.fdsim` from ``site_dir`` alone (not tests/): a backup
    with its own reference plugin, in each interpreter mode this Python has."""
    tree = os.path.join(work, "tree")
    os.makedirs(tree)
    with open(os.path.join(tree, "file"), "w") as f:
        f.write("data")
    plugins = os.path.join(site_dir, "vz7native", "fdsim", "plugins")
    modes = ["fresh-import"] + (["sub-interpreter"] if sys.version_info >= (3, 8) else [])
    for mode in modes:
        workdir = os.path.join(work, mode)
        out = check_output([sys.executable, "-m", "vz7native.fdsim", "backup", "--json",
                            "--workdir", workdir, "--interpreter", mode, "--plugin",
                            "python3:module_path=%s:module_name=reference_tree:root=%s"
                            % (plugins, tree)],
                           env=dict(os.environ, PYTHONPATH=site_dir), cwd=work)
        job = json.loads(out)
        assert (job["status"], job["files"], job["bytes"]) == ("T", 2, 4), out
        for log in glob.glob(os.path.join(workdir, "fd", "*", "fd.log")):
            with open(log) as f:
                assert "Traceback" not in f.read(), log


@pytest.fixture(scope="module")
def installed(tmp_path_factory, source):
    """`pip install .` with this interpreter's pip (21.3.1 on Python 3.6), into a
    directory of its own."""
    target = str(tmp_path_factory.mktemp("pip") / "installed")
    check_output([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation",
                  "--no-deps", "--target", target, source],
                 env=dict(os.environ, LANG="C", LC_ALL="C"))
    return target


def test_pip_install_builds_the_extension_and_installs_vz7ploop(tmp_path, installed):
    """The extension is built, the entry point installed, the simulator with them."""
    target = installed
    script = os.path.join(target, "bin", "vz7ploop")
    assert os.access(script, os.X_OK)
    env = dict(os.environ, PYTHONPATH=target)
    out = check_output([script, "--help"], env=env)
    for command in ("ct-mount-snapshot", "ct-umount-snapshot", "snapshot", "check"):
        assert command in out
    out = check_output([sys.executable, "-c", "import vz7native, vz7native.ploop, "
                        "vz7native.walk; print(vz7native.__file__)"], env=env)
    assert out.strip() == os.path.join(target, "vz7native", "__init__.py")
    # the plugin is not a site-packages package: it goes to Bareos's plugin directory
    assert not os.path.exists(os.path.join(target, "vz7bareos"))
    # the installed command drives libploop
    out = check_output([script, "init", "-s", "16M", "-t", "none", str(tmp_path / "root.hds")],
                       env=env)
    assert out.strip() == str(tmp_path / "DiskDescriptor.xml")
    # the simulator came along and runs as vz7native.fdsim
    for name in SIMULATOR_FILES:
        assert os.path.isfile(os.path.join(target, "vz7native", "fdsim", name)), name
    simulator_runs(target, str(tmp_path / "sim"))


@pytest.mark.root
def test_the_installed_selftest_runs_the_plugin_through_the_installed_simulator(
        tmp_path, source, installed):
    """vz7ploop selftest of a `pip install .` (no source checkout around it): its
    backup and restore steps run the plugin (--plugin-dir: pip does not install
    it) through vz7native.fdsim."""
    target = installed
    env = dict(os.environ, PYTHONPATH=target)
    out = check_output([sys.executable, "-c", "from vz7native import selftest; "
                        "print(selftest.__file__, selftest._find_simulator())"],
                       env=env, cwd=str(tmp_path))
    assert out.split() == [os.path.join(target, "vz7native", "selftest.py"),
                           "('vz7native.fdsim',", "[])"]
    scratch = str(tmp_path / "scratch")
    with own_run_dir(os.fsencode(str(tmp_path))):
        out = check_output([os.path.join(target, "bin", "vz7ploop"), "selftest", "--dir",
                            scratch, "--plugin-dir", os.path.join(source, "src", "plugin"),
                            "--json"], env=env, cwd=str(tmp_path))
    report = json.loads(out)
    steps = {step["name"]: step for step in report["steps"]}
    assert report["ok"] is True, out
    for name, jobid in (("backup", 1), ("restore", 2)):
        assert steps[name]["status"] == "ok", steps[name]
        assert steps[name]["detail"].startswith("Bareos %s job %d: T, " % (name, jobid))
    assert not os.path.exists(scratch)
