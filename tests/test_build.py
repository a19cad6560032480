"""The compiled modules (the libploop binding and the walker's core): what they
record about their build, the version guard, what each needs."""
import json
import os
import re
import struct
import subprocess
import sys

import pytest

import vz7native
from vz7native import ploop, walk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_info_names_the_header_and_our_version():
    info = vz7native.build_info()
    assert info["package_version"] == vz7native.__version__
    assert info["header"].endswith("ploop/libploop.h")
    assert os.path.isfile(info["header"])
    # The flavour follows the header: only 7.0.x declares ploop_read_dd.
    with open(info["header"]) as f:
        header = f.read()
    declares_read_dd = "ploop_read_dd(" in header
    assert info["flavor"] == ("vz7" if declares_read_dd else "openvz")
    assert info["header_version"] == ("7.0.x" if declares_read_dd else "1.x")
    assert info["read_dd"] is declares_read_dd
    assert info["get_part"] is ("ploop_get_part(" in header)


def test_build_info_names_the_library_this_process_runs():
    info = vz7native.build_info()
    # What the build linked is what was loaded, and it is the one mapped here.
    assert info["library"] == info["linked_library"]
    with open("/proc/self/maps") as f:
        mapped = {line.split()[-1] for line in f if "libploop" in line}
    assert mapped == {os.path.realpath(info["library"])}
    # The version comes from that file's name: libploop.so.<version>.
    real = os.path.basename(os.path.realpath(info["library"]))
    assert real == "libploop.so." + info["libploop_version"]
    assert info["libploop_version"].split(".")[0] == (
        "7" if info["flavor"] == "vz7" else "1")


def _copy_package(target, replace=None):
    """The package's Python files (and, unless replaced, its compiled modules)
    in ``target``/vz7native; ``replace`` maps file names to new contents."""
    pkg = target / "vz7native"
    pkg.mkdir(parents=True)
    src = os.path.dirname(vz7native.__file__)
    for name in os.listdir(src):
        if name.endswith((".py", ".so")):
            data = open(os.path.join(src, name), "rb").read()
            for old, new in (replace or {}).get(name, ()):
                data = data.replace(old, new)
            (pkg / name).write_bytes(data)
    return pkg


def test_every_sysexit_code_of_the_header_is_mapped():
    with open(vz7native.build_info()["header"]) as f:
        header = f.read()
    assert "SYSEXIT_NOSNAP" in header
    assert ploop.sysexit_name(43) == "SYSEXIT_NOSNAP"
    assert ploop.sysexit_name(2) == "SYSEXIT_DEVICE"
    assert isinstance(ploop.error_for(43, "f"), ploop.NoSnapshotError)
    assert isinstance(ploop.error_for(38, "f"), ValueError)
    assert type(ploop.error_for(-1, "f")) is ploop.PloopError


@pytest.mark.parametrize("module", ["vz7native.ploop", "vz7native.walk"])
def test_import_refuses_a_module_built_for_another_version(tmp_path, module):
    # A copy of the package whose __version__ differs from the compiled module's.
    _copy_package(tmp_path, {"__init__.py": [(b'__version__ = "', b'__version__ = "999.')]})
    proc = subprocess.run(
        [sys.executable, "-c", "import " + module],
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "built for vz7native %s" % vz7native.__version__ in proc.stderr
    assert "vz7native._%s was built" % module.split(".")[1] in proc.stderr


def run_python(code, *args):
    proc = subprocess.run([sys.executable, "-c", code] + list(args), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_walker_needs_neither_libploop_nor_its_header(tmp_path):
    # Its builder works where the libploop header is missing...
    code = ("import build_ffi, sys; build_ffi._include_dirs = lambda: [sys.argv[1]]; "
            "build_ffi.make_walk_ffibuilder()\n"
            "try:\n    build_ffi.make_ffibuilder()\nexcept SystemExit:\n    print('no-header')")
    assert run_python(code, str(tmp_path)) == ["no-header"]
    # ...and walking loads neither libploop nor its binding.
    code = ("import sys; from vz7native.walk import walk; n = len(list(walk(sys.argv[1])))\n"
            "print(n, 'vz7native._ploop' in sys.modules,"
            " any('libploop' in line for line in open('/proc/self/maps')))")
    (tmp_path / "f").write_bytes(b"")
    assert run_python(code, str(tmp_path)) == ["2", "False", "False"]


def test_the_walker_uses_its_native_core_where_the_records_fit(monkeypatch):
    # On the Pythons this package supports, the import-time check passes.
    assert run_python("from vz7native import walk; print(walk._CORE.__name__)") == ["_NativeCore"]
    assert walk._native_core_fits()
    # Fields in other places (st_atime and st_mtime swapped), another record
    # size, or integers where C wrote floats: the pure-Python core would take over.
    fields = list(walk._STAT_FIELDS)
    fields[10], fields[11] = fields[11], fields[10]
    monkeypatch.setattr(walk, "_STAT_FIELDS", tuple(fields))
    assert not walk._native_core_fits()
    monkeypatch.undo()
    monkeypatch.setattr(walk, "_RECORD", struct.Struct("=qQ8q3d5q"))
    assert not walk._native_core_fits()
    monkeypatch.setattr(walk, "_RECORD", struct.Struct("=qQ8q3q6q"))
    assert not walk._native_core_fits()


def test_build_fails_clearly_without_the_header(tmp_path):
    env = dict(os.environ, VZ7NATIVE_PLOOP_INCLUDE=str(tmp_path), CPATH="")
    code = ("import build_ffi, sys; build_ffi._include_dirs = lambda: [sys.argv[1]]; "
            "build_ffi.find_header()")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode != 0
    assert "libploop-dev" in proc.stderr and "ploop-devel" in proc.stderr


@pytest.mark.parametrize("text,expected", [
    ("struct ploop_create_param { int a; char *fslabel; };", "VZ7N_HAVE_FSLABEL"),
    ("int ploop_read_dd(struct ploop_disk_images_data *di);", "VZ7N_HAVE_READ_DD"),
    ("struct ploop_snapshot_param { char *guid; char *cbt_uuid; };", "VZ7N_HAVE_CBT"),
])
def test_header_feature_detection(text, expected):
    sys.path.insert(0, ROOT)
    try:
        import build_ffi
    finally:
        sys.path.remove(ROOT)
    features = build_ffi.header_features(text)
    assert features[expected] is True
    assert sum(features.values()) == 1


def _build_env(**variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VZ7NATIVE_PLOOP_")}
    env.update(variables, CPATH="")
    return env


def test_build_refuses_a_library_that_lacks_what_the_header_declares(tmp_path):
    # A 7.0.x-style header (it declares ploop_read_dd and ploop_get_part) in
    # front of this machine's library: the build must stop, not the import.
    with open(vz7native.build_info()["header"]) as f:
        header = f.read()
    if "ploop_read_dd(" not in header:
        header += ("\nint ploop_read_dd(struct ploop_disk_images_data *di);\n"
                   "int ploop_get_part(struct ploop_disk_images_data *di, const char *dev,"
                   " char *partname, int len);\n")
    else:   # a 7.0.x library: a 1.15-style header wants what 7.0.x dropped
        header = header.replace("ploop_read_dd(", "ploop_read_dd_gone(")
        header += ("\nint ploop_read_disk_descr(struct ploop_disk_images_data **di, const char *file);\n"
                   "void ploop_free_diskdescriptor(struct ploop_disk_images_data *di);\n")
    (tmp_path / "ploop").mkdir()
    (tmp_path / "ploop" / "libploop.h").write_text(header)
    env = _build_env(VZ7NATIVE_PLOOP_INCLUDE=str(tmp_path))
    if vz7native.build_info()["library_dir"]:   # this build's library, not the system's
        env["VZ7NATIVE_PLOOP_LIBDIR"] = vz7native.build_info()["library_dir"]
    proc = subprocess.run([sys.executable, "-c", "import build_ffi; build_ffi.make_ffibuilder()"],
                          cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode != 0
    # Both are named: the header with its version, the library file with its own.
    info = vz7native.build_info()
    flavour = "1.x" if info["read_dd"] else "7.0.x"
    assert "%s/ploop/libploop.h is a libploop %s header" % (tmp_path, flavour) in proc.stderr
    named = re.search(r"header, but (/\S+) \(libploop ([0-9.]+)\) lacks", proc.stderr)
    assert named is not None, proc.stderr
    assert os.path.realpath(named.group(1)) == os.path.realpath(info["library"])
    assert named.group(2) == info["libploop_version"]
    assert "undefined reference" in proc.stderr
    assert "VZ7NATIVE_PLOOP_PREFIX" in proc.stderr


def test_build_against_a_libploop_in_another_prefix(tmp_path):
    """VZ7NATIVE_PLOOP_PREFIX: header, library and run-time path from one prefix.
    The prefix here links to this machine's libploop under another directory."""
    real = os.path.realpath(vz7native.build_info()["library"])
    prefix = tmp_path / "prefix"
    (prefix / "include").mkdir(parents=True)
    (prefix / "lib").mkdir()
    os.symlink(os.path.dirname(os.path.realpath(vz7native.build_info()["header"])),
               str(prefix / "include" / "ploop"))
    soname = "libploop.so." + vz7native.build_info()["libploop_version"].split(".")[0]
    for name in ("libploop.so", soname):
        os.symlink(real, str(prefix / "lib" / name))
    out = tmp_path / "out"
    out.mkdir()
    code = "import build_ffi, sys; build_ffi.make_ffibuilder().compile(tmpdir=sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT,
                          env=_build_env(VZ7NATIVE_PLOOP_PREFIX=str(prefix)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout
    built = [n for n in os.listdir(str(out / "vz7native")) if n.endswith(".so")]
    assert len(built) == 1
    dynamic = subprocess.check_output(["readelf", "-d", str(out / "vz7native" / built[0])],
                                      universal_newlines=True)
    paths = re.search(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", dynamic).group(1).split(":")
    assert str(prefix / "lib") in paths

    pkg = _copy_package(tmp_path / "run")
    for name in os.listdir(str(pkg)):
        if name.startswith("_ploop."):
            os.unlink(str(pkg / name))
    os.rename(str(out / "vz7native" / built[0]), str(pkg / built[0]))
    code = "import json, vz7native; print(json.dumps(vz7native.build_info()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path / "run"),
                          env=dict(os.environ, PYTHONPATH=str(tmp_path / "run")),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    lib_dir = str(prefix / "lib")
    assert info["header"] == str(prefix / "include" / "ploop" / "libploop.h")
    assert info["library_dir"] == lib_dir
    assert info["linked_library"] == info["library"] == os.path.join(lib_dir, soname)
    assert info["libploop_version"] == vz7native.build_info()["libploop_version"]
