"""Registering a restored container: the process handling around prlctl / vzctl.

The tools are stand-in scripts: what is tested is how the command is run, timed
out, killed and reported, not what prlctl does."""
import os
import time

import pytest

from vz7native.host import RegisterError, register_container

PRIVATE = "/vz/private/2d109ae4-5231-475f-bc44-5cabf5d8503b"


@pytest.fixture
def bin_dir(tmp_path):
    path = tmp_path / "bin"
    path.mkdir()
    return path


def gone(pid):
    """True once ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def tool(bin_dir, name, body):
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_prlctl_register_preserving_the_uuid(bin_dir, tmp_path):
    args = tmp_path / "args"
    tool(bin_dir, "prlctl", 'echo "$@" > %s\necho "The CT has been successfully registered."\n' % args)
    tool(bin_dir, "vzctl", "exit 99\n")                 # prlctl comes first
    out = register_container(PRIVATE + "/", 10, dirs=[str(bin_dir)])
    assert out == "The CT has been successfully registered."
    assert args.read_text() == "register %s --preserve-uuid\n" % PRIVATE


def test_vzctl_when_there_is_no_prlctl(bin_dir, tmp_path):
    args = tmp_path / "args"
    tool(bin_dir, "vzctl", 'echo "$@" > %s\n' % args)
    assert register_container(os.fsencode(PRIVATE), 10, dirs=[str(bin_dir)]) == ""
    assert args.read_text() == "register %s 2d109ae4-5231-475f-bc44-5cabf5d8503b\n" % PRIVATE
    register_container("/vz/private/101", 10, ctid="101", dirs=[str(bin_dir)])
    assert args.read_text() == "register /vz/private/101 101\n"


def test_a_failure_carries_the_output(bin_dir):
    tool(bin_dir, "prlctl", 'echo "Failed to register the CT: uuid already in use" >&2\nexit 3\n')
    with pytest.raises(RegisterError) as e:
        register_container(PRIVATE, 10, dirs=[str(bin_dir)])
    assert str(e.value) == ("%s/prlctl register %s --preserve-uuid failed (exit status 3): "
                            "Failed to register the CT: uuid already in use" % (bin_dir, PRIVATE))
    assert e.value.output == "Failed to register the CT: uuid already in use"
    assert e.value.command == [str(bin_dir / "prlctl"), "register", PRIVATE, "--preserve-uuid"]


def test_a_hanging_tool_is_killed_with_its_children(bin_dir, tmp_path):
    child = tmp_path / "child.pid"
    tool(bin_dir, "prlctl", 'echo "Registering..."\nsleep 60 &\necho $! > %s\nwait\n' % child)
    started = time.monotonic()
    with pytest.raises(RegisterError) as e:
        register_container(PRIVATE, 0.5, dirs=[str(bin_dir)])
    assert time.monotonic() - started < 10
    assert str(e.value) == (
        "%s/prlctl register %s --preserve-uuid did not finish within 0.5 s and was killed: "
        "Registering...; register the container with: prlctl register %s --preserve-uuid"
        % (bin_dir, PRIVATE, PRIVATE))
    sleeper = int(child.read_text())
    for _ in range(100):
        if gone(sleeper):
            break
        time.sleep(0.05)
    assert gone(sleeper)


def test_no_tool_tells_the_admin_what_to_run(bin_dir):
    with pytest.raises(RegisterError) as e:
        register_container(PRIVATE, 10, dirs=[str(bin_dir)])
    assert str(e.value) == (
        "the restored container in %s is not registered: neither prlctl nor vzctl was found in "
        "%s; register it with: prlctl register %s --preserve-uuid" % (PRIVATE, bin_dir, PRIVATE))


def test_a_tool_that_cannot_be_run(bin_dir):
    script = bin_dir / "prlctl"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(RegisterError, match="cannot run .*prlctl register .*: No such file"):
        register_container(PRIVATE, 10, dirs=[str(bin_dir)])


def test_long_output_keeps_its_end(bin_dir):
    tool(bin_dir, "prlctl", "seq 1 5000\nexit 1\n")
    with pytest.raises(RegisterError) as e:
        register_container(PRIVATE, 10, dirs=[str(bin_dir)])
    assert e.value.output.startswith("...") and e.value.output.endswith("4999\n5000")
    assert len(e.value.output) == 4096 + 3
