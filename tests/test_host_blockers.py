"""Blocker globs inside a container root: symlinks never lead out of it."""
import os

import pytest

from vz7native.host import BlockerError, find_blockers


@pytest.fixture
def ct_root(tmp_path):
    """A container root next to an outside directory that symlinks try to reach."""
    outside = tmp_path / "outside"
    (outside / "tmp").mkdir(parents=True)
    (outside / "marker").write_text("outside")
    (outside / "tmp" / "backup_blocker").write_text("outside")
    root = tmp_path / "ct"
    for d in ("tmp", "run", "var", "home/alice", "etc", "home/caf\udce9"):
        (root / d).mkdir(parents=True)
    (root / "tmp" / "backup_blocker").write_text("")
    (root / "tmp" / "a.block").write_text("")
    (root / "tmp" / ".hidden.block").write_text("")
    (root / "run" / "blocker").write_text("")
    (root / "home" / "alice" / "blocker").write_text("")
    (root / "home" / "caf\udce9" / "blocker").write_text("")
    (root / "etc" / "marker").write_text("inside")
    links = {
        "var/run": "/run",                              # absolute: the container's own /run
        "var/up": "../../../outside",                   # climbs out with ..
        "var/abs": str(outside),                        # the host's real path of outside/
        "home/bob": str(outside / "tmp"),               # a home that is a host directory
        "tmp/dangling.block": "/nowhere",
        "tmp/evil.block": str(outside / "marker"),      # the match itself is not followed
        "tmp/loop": "loop",
        "etc/self": "/",
    }
    for link, target in links.items():
        os.symlink(target, str(root / link))
    return root, outside


def found(root, pattern):
    return [os.fsdecode(p) for p in find_blockers(str(root), pattern)]


def test_a_plain_blocker_file(ct_root):
    root, _ = ct_root
    assert found(root, "tmp/backup_blocker") == ["/tmp/backup_blocker"]
    assert found(root, "/tmp/backup_blocker") == ["/tmp/backup_blocker"]
    assert found(root, b"tmp/backup_blocker") == ["/tmp/backup_blocker"]
    assert found(root, "tmp/missing") == []


def test_globs_follow_glob_rules(ct_root):
    root, _ = ct_root
    assert found(root, "tmp/*.block") == ["/tmp/a.block", "/tmp/dangling.block", "/tmp/evil.block"]
    assert found(root, "tmp/.*.block") == ["/tmp/.hidden.block"]
    assert found(root, "tmp/[ab].bl?ck") == ["/tmp/a.block"]
    assert found(root, "home/*/blocker") == ["/home/alice/blocker", "/home/caf\udce9/blocker"]
    assert found(root, b"home/caf\xe9/*") == ["/home/caf\udce9/blocker"]


def test_symlinks_inside_the_root_are_followed_there(ct_root):
    root, _ = ct_root
    assert found(root, "var/run/blocker") == ["/var/run/blocker"]
    assert found(root, "etc/self/etc/marker") == ["/etc/self/etc/marker"]
    assert found(root, "var/*/blocker") == ["/var/run/blocker"]


def test_symlinks_never_lead_out_of_the_root(ct_root):
    root, outside = ct_root
    assert (outside / "marker").exists()
    assert found(root, "var/up/marker") == []
    assert found(root, "var/abs/marker") == []
    assert found(root, "var/abs/tmp/backup_blocker") == []
    assert found(root, "home/bob/backup_blocker") == []
    assert found(root, "var/*/marker") == []
    # Three levels down, only the container's own /tmp is reached (through etc/self).
    assert found(root, "*/*/*/backup_blocker") == ["/etc/self/tmp/backup_blocker"]


def test_dotdot_stops_at_the_root(ct_root):
    root, _ = ct_root
    assert found(root, "../outside/marker") == []
    assert found(root, "../../../etc/marker") == ["/../../../etc/marker"]
    assert found(root, "tmp/../tmp/backup_blocker") == ["/tmp/../tmp/backup_blocker"]


def test_loops_and_files_in_the_middle_match_nothing(ct_root):
    root, _ = ct_root
    assert found(root, "tmp/loop/x") == []
    assert found(root, "tmp/backup_blocker/x") == []
    assert found(root, "tmp/*/x") == []


def test_the_root_can_be_an_open_fd(ct_root):
    root, _ = ct_root
    fd = os.open(str(root), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert find_blockers(fd, "run/*") == [b"/run/blocker"]
        os.fstat(fd)                                   # still open
    finally:
        os.close(fd)


def test_bad_globs_and_roots(ct_root, tmp_path):
    root, _ = ct_root
    for pattern in ("", "/", "./."):
        with pytest.raises(BlockerError, match="names nothing inside the container"):
            find_blockers(str(root), pattern)
    with pytest.raises(BlockerError, match="cannot look for blocker files in .*nope: No such file"):
        find_blockers(str(tmp_path / "nope"), "x")
