"""TreeWriter on its own: hard links placed over what exists (the directory
chain walked away to the link's source and back)."""
import os
import stat

import pytest

from vz7native.treewrite import TreeWriter

pytestmark = pytest.mark.root

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


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
