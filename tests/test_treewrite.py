"""TreeWriter on its own: hard links placed over what exists (the directory
chain walked away to the link's source and back), and attributes set through a
new file's data fd."""
import collections
import os
import stat

import pytest

from vz7native.treewrite import TreeWriter

pytestmark = pytest.mark.root

Attributes = collections.namedtuple("Attributes", "uid gid mode atime_ns mtime_ns flags")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("policy", ["always", "never"])
def test_a_hard_link_over_an_existing_entry_deeper_than_its_source(tmp_path, policy):
    top = str(tmp_path)
    write(os.path.join(top, "b", "c", "y"), b"in the way")
    write(os.path.join(top, "a", "y"), b"a neighbour of the source")
    write(os.path.join(top, "b", "y"), b"a neighbour of the link")
    writer = TreeWriter(top, replace=policy)
    try:
        source = writer.place(b"a/x", stat.S_IFREG | 0o644)
        os.write(source.fd, b"linked")
        writer.close_data(source)
        placed = writer.place(b"b/c/y", stat.S_IFREG | 0o644, link_to=b"a/x")
    finally:
        writer.close()
    linked = os.stat(os.path.join(top, "b", "c", "y")).st_ino == os.stat(
        os.path.join(top, "a", "x")).st_ino
    if policy == "always":
        assert not isinstance(placed, str) and linked
    else:
        assert placed == "Already exists" and not linked
    for name, data in (("a/y", b"a neighbour of the source"), ("b/y", b"a neighbour of the link")):
        with open(os.path.join(top, name), "rb") as f:
            assert f.read() == data


def test_attributes_are_set_through_the_data_fd_which_is_closed(tmp_path):
    top = str(tmp_path)
    before = open_fds()
    writer = TreeWriter(top)
    try:
        placed = writer.place(b"d/f", stat.S_IFREG | 0o644)
        os.write(placed.fd, b"data")
        writer.set_attributes(placed, Attributes(1234, 5678, stat.S_IFREG | 0o4750,
                                                 -123456789, 4102444800123456789, -1),
                              xattrs=[(b"user.note", b"kept")])
        assert placed.fd is None
        writer.finish()
    finally:
        writer.close()
    assert open_fds() == before
    st = os.lstat(os.path.join(top, "d", "f"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4750)
    assert (st.st_atime_ns, st.st_mtime_ns) == (-123456789, 4102444800123456789)
    assert os.getxattr(os.path.join(top, "d", "f"), "user.note") == b"kept"
