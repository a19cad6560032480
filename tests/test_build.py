"""The compiled modules (the libploop binding and the walker's core): what they
record about their build, the version guard, what each needs."""
import os
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
        declares_read_dd = "ploop_read_dd(" in f.read()
    assert info["flavor"] == ("vz7" if declares_read_dd else "openvz")
    assert info["read_dd"] is declares_read_dd


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
    pkg = tmp_path / "vz7native"
    pkg.mkdir()
    src = os.path.dirname(vz7native.__file__)
    for name in os.listdir(src):
        if name.endswith((".py", ".so")):
            data = open(os.path.join(src, name), "rb").read()
            if name == "__init__.py":
                data = data.replace(b'__version__ = "', b'__version__ = "999.')
            (pkg / name).write_bytes(data)
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
