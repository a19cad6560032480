"""The compiled binding: what it records about its build, and the version guard."""
import os
import subprocess
import sys

import pytest

import vz7native
from vz7native import ploop

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


def test_import_refuses_a_module_built_for_another_version(tmp_path):
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
        [sys.executable, "-c", "import vz7native.ploop"],
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "built for vz7native %s" % vz7native.__version__ in proc.stderr


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
