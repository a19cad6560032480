"""vz7native.walk on real trees: every kind of entry, deep and wide trees, names
that are not UTF-8, entries that vanish or cannot be read, excludes, mounts.

Every test runs with both cores: the native one (getdents64 + fstatat in C) and
the pure-Python one the walker falls back to on a Python whose os.stat_result
the native records do not fit."""
import ast
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import ct_tree
import fuse_tree
from conftest import require
from vz7native import walk as walkmod
from vz7native.walk import WalkError, walk

CORES = {"native": walkmod._NativeCore, "python": walkmod._PythonCore}


@pytest.fixture(autouse=True, params=sorted(CORES))
def core(request, monkeypatch):
    """The name of the core every walk of the test runs with."""
    monkeypatch.setattr(walkmod, "_CORE", CORES[request.param])
    return request.param


def collect(top, **options):
    """(entries, errors) of a whole walk; errors are (path, exception) pairs."""
    errors = []
    entries = list(walk(top, on_error=lambda path, exc: errors.append((path, exc)), **options))
    return entries, errors


def relpaths(entries):
    return [e.relpath for e in entries]


def make_tree(top, spec):
    """Create files (bytes content or None) and directories (dicts) below ``top``."""
    os.makedirs(top, exist_ok=True)
    for name, content in spec.items():
        path = os.path.join(top, name)
        if isinstance(content, dict):
            make_tree(path, content)
        else:
            with open(path, "wb") as f:
                f.write(content or b"")


def reference(top):
    """{relpath: lstat} of everything below ``top`` (and top), by os.walk + lstat."""
    top = os.fsencode(str(top))
    found = {b"": os.lstat(top)}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, top)] = os.lstat(path)
    return found


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def same_stat(a, b):
    fields = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_size", "st_mtime_ns", "st_rdev")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


@pytest.mark.root
def test_a_container_tree_every_entry_once_with_its_own_lstat(tmp_path):
    # ct_tree: files, hard links across directories, symlinks (relative,
    # absolute, dangling), device nodes, a FIFO, a socket, names that are not
    # UTF-8, a 255-byte name, 40 levels, 300 entries in a directory.
    top = tmp_path / "ct"
    top.mkdir()
    ct_tree.build_tree(str(top))
    os.symlink("home", str(top / "link-to-dir"))

    entries, errors = collect(top)

    assert errors == []
    want = reference(top)
    assert sorted(relpaths(entries)) == sorted(want)
    described = ct_tree.describe(str(top))
    t = os.fsencode(str(top))
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
             stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
             stat.S_IFBLK: "blockdev"}
    for e in entries:
        assert type(e.path) is bytes
        assert e.path == (os.path.join(t, e.relpath) if e.relpath else t)
        assert e.name == os.path.basename(e.path)
        assert same_stat(e.stat, want[e.relpath]), e
        assert e.type == kinds[described[e.relpath or b"."]["kind"]], e
    assert {e.type for e in entries} == set(kinds.values())
    # Hard-link facts come with the stat: the groups ct_tree made are found again.
    groups = {}
    for e in entries:
        if e.type == walkmod.FILE and e.stat.st_nlink > 1:
            groups.setdefault((e.stat.st_dev, e.stat.st_ino), []).append(e.relpath)
    assert [sorted(g) for g in groups.values()] == [
        described[b"var/lib/data"]["links"]]
    assert [e.type for e in entries if e.relpath == b"link-to-dir"] == [walkmod.SYMLINK]


def all_stat_values(st):
    """Every field of an os.stat_result (== compares only the first ten)."""
    return tuple(st[:10]) + tuple(getattr(st, name) for name in (
        "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
        "st_blksize", "st_blocks", "st_rdev"))


@pytest.mark.root
def test_every_stat_field_is_what_os_lstat_gives(tmp_path):
    # The native core builds os.stat_result from C's records: every field must
    # equal os.lstat's, floats to the last bit, at the edges too.
    top = tmp_path / "ct"
    top.mkdir()
    ct_tree.build_tree(str(top))
    t = os.fsencode(str(top))
    with open(t + b"/sparse-5g", "wb") as f:
        f.truncate(5 << 30)
        f.seek(3 << 30)
        f.write(b"data")
    os.mknod(t + b"/big-dev", stat.S_IFBLK | 0o600, os.makedev(4095, 1048575))
    os.mknod(t + b"/char-dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.symlink(b"sparse-5g", t + b"/link")
    times = {
        b"ns": (1234567890123456789, 1700000000999999999),
        b"before-1970": (-1, -123456789012),           # -1 s; 1966, with nanoseconds
        b"after-2262": (10 ** 19, 16 * 10 ** 18 + 1),  # beyond int64 nanoseconds: CPython's own
        b"round-half": (1500000000500000000, 1099511627775999999),
        b"epoch": (3, 1000000007),  # where nsec * 1e-9 and nsec / 1e9 differ
    }
    for name, (atime_ns, mtime_ns) in times.items():
        open(t + b"/" + name, "wb").close()
        os.utime(t + b"/" + name, ns=(atime_ns, mtime_ns), follow_symlinks=False)
    os.chown(t + b"/ns", 4294967294, 4294967294)
    assert os.lstat(t + b"/after-2262").st_atime_ns == 10 ** 19
    # Listing a directory or resolving a symlink updates its atime once
    # (relatime): settle them before the walk that is compared.
    want = reference(top)
    collect(top)

    entries, errors = collect(top)

    assert errors == []
    assert sorted(relpaths(entries)) == sorted(want)
    for e in entries:
        assert all_stat_values(e.stat) == all_stat_values(os.lstat(e.path)), e
        assert type(e.stat) is os.stat_result
    found = {e.relpath: e.stat for e in entries}
    assert found[b"sparse-5g"].st_size == 5 << 30
    assert found[b"big-dev"].st_rdev == os.makedev(4095, 1048575)
    assert found[b"ns"].st_uid == found[b"ns"].st_gid == 4294967294
    assert found[b"before-1970"].st_mtime_ns == -123456789012


def test_symlink_loops_and_links_to_directories_are_not_followed(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"dir": {"f": b""}})
    for name, target in [("self", "self"), ("a", "b"), ("b", "a"), ("dot", "."), ("up", ".."),
                         ("to-dir", "dir"), ("to-top", str(top)), ("to-root", "/")]:
        os.symlink(target, str(top / name))
    os.symlink("..", str(top / "dir" / "back"))

    entries, errors = collect(top)

    assert errors == []
    assert sorted(relpaths(entries)) == sorted(
        [b"", b"dir", b"dir/f", b"dir/back", b"self", b"a", b"b", b"dot", b"up", b"to-dir",
         b"to-top", b"to-root"])
    assert all(e.type == "symlink" for e in entries if e.name not in (b"t", b"dir", b"f"))


def test_post_order_puts_directories_after_their_contents_pre_order_before(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"a": {"b": {"c": b"", "d": {}}, "e": b""}, "f": b"", "g": {}})

    post, errors = collect(top)
    pre, _ = collect(top, order="pre")

    assert errors == []
    assert sorted(relpaths(post)) == sorted(relpaths(pre)) == sorted(reference(top))
    post_at = {e.relpath: i for i, e in enumerate(post)}
    pre_at = {e.relpath: i for i, e in enumerate(pre)}
    for rel in post_at:
        for ancestor in ancestors(rel):
            assert post_at[ancestor] > post_at[rel]
            assert pre_at[ancestor] < pre_at[rel]
    assert post[-1].relpath == b"" and pre[0].relpath == b""


def ancestors(rel):
    parts = rel.split(b"/") if rel else []
    return [b"/".join(parts[:i]) for i in range(len(parts))]


def test_sorted_walk_is_byte_ordered_and_reproducible(tmp_path):
    top = tmp_path / "t"
    names = ["b", "a", "C", "a0", "_", "\u00e9", "z"]
    make_tree(str(top), {n: ({m: b"" for m in names} if n in "az" else b"") for n in names})

    def sorted_post_order(rel):
        path = os.path.join(os.fsencode(str(top)), rel) if rel else os.fsencode(str(top))
        out = []
        for name in sorted(os.listdir(path)):
            child = os.path.join(rel, name) if rel else name
            if os.path.isdir(os.path.join(path, name)):
                out += sorted_post_order(child)
            else:
                out.append(child)
        return out + [rel]

    entries, errors = collect(top, sort=True)
    assert errors == []
    assert relpaths(entries) == sorted_post_order(b"")
    assert relpaths(collect(str(top), sort=True)[0]) == relpaths(entries)


def test_300_levels_with_paths_longer_than_path_max(tmp_path):
    name = b"level-0123456789"
    depth = 300
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"12345")
        os.close(leaf)
    finally:
        os.close(fd)
    top = os.fsencode(str(tmp_path))
    fds_before = open_fds()

    entries, errors = collect(top)

    assert errors == []
    assert len(entries) == depth + 2
    deepest = entries[0]
    assert deepest.relpath == b"/".join([name] * depth + [b"leaf"])
    assert len(deepest.path) > 4096  # beyond PATH_MAX: only fd-relative calls reach it
    assert deepest.type == "file" and deepest.stat.st_size == 5
    assert [e.relpath.count(b"/") for e in entries[1:-1]] == list(range(depth - 1, -1, -1))
    assert open_fds() == fds_before

    # Stopping half-way down releases every descriptor the walk held.
    walker = walk(top, order="pre")
    for entry in walker:
        if entry.relpath.count(b"/") == depth - 1:
            break
    assert open_fds() > fds_before + depth
    walker.close()
    assert open_fds() == fds_before
    shutil.rmtree(top)  # fd-based, copes with the depth


def test_20k_entries_in_one_directory(tmp_path):
    top = tmp_path / "wide"
    top.mkdir()
    fd = os.open(str(top), os.O_RDONLY)
    try:
        for i in range(20000):
            os.mknod("f%05d" % i, 0o644 | stat.S_IFREG, dir_fd=fd)
    finally:
        os.close(fd)

    entries, errors = collect(top)
    ordered, _ = collect(top, sort=True)

    assert errors == []
    names = sorted(e.name for e in entries[:-1])
    assert names == [b"f%05d" % i for i in range(20000)]
    assert [e.name for e in ordered[:-1]] == names
    assert all(e.type == "file" for e in entries[:-1])


def test_names_that_are_not_utf8_come_through_as_bytes(tmp_path):
    top = os.fsencode(str(tmp_path / "t"))
    os.mkdir(top)
    os.mkdir(top + b"/d\xff")
    for path in (b"/caf\xe9", b"/\xff\xfe", b"/d\xff/K\xdcBLER.csv", b"/ok-\xc3\xa9"):
        open(top + path, "wb").close()
    os.symlink(b"caf\xe9", top + b"/link\x80")

    for given in (top, os.fsdecode(top)):
        entries, errors = collect(given)
        assert errors == []
        assert all(type(e.path) is bytes for e in entries)
        assert sorted(relpaths(entries)) == sorted(
            [b"", b"d\xff", b"caf\xe9", b"\xff\xfe", b"d\xff/K\xdcBLER.csv", b"ok-\xc3\xa9",
             b"link\x80"])
    left, _ = collect(top, excludes=[b"*\xe9", b"d\xff/K*"])
    assert sorted(relpaths(left)) == sorted([b"", b"d\xff", b"\xff\xfe", b"ok-\xc3\xa9", b"link\x80"])


def deleting_walk(top, when, delete, sort=True, **options):
    """Walk ``top`` (sorted unless told) and run ``delete()`` once the entry ``when`` was yielded."""
    entries, errors = [], []
    for entry in walk(top, sort=sort, on_error=lambda p, e: errors.append((p, e)), **options):
        entries.append(entry)
        if entry.relpath == when:
            delete()
    return entries, errors


def test_entries_deleted_during_the_walk_are_reported_and_the_walk_goes_on(tmp_path):
    # A directory's names are listed when the walk enters it, its entries are
    # stat'ed in batches that never reach past a subdirectory: what is deleted
    # while a subdirectory listed before it is walked was listed, not stat'ed.
    top = tmp_path / "t"
    make_tree(str(top), {"a": {"x": b""}, "b": b"", "c": {"w": {"f": b""}, "y": b"", "z": b""},
                         "d": {"f": b""}, "e": b""})
    t = os.fsencode(str(top))

    def delete_b_and_d():
        os.unlink(t + b"/b")
        shutil.rmtree(t + b"/d")

    entries, errors = deleting_walk(top, b"a/x", delete_b_and_d)
    assert relpaths(entries) == [b"a/x", b"a", b"c/w/f", b"c/w", b"c/y", b"c/z", b"c", b"e", b""]
    assert [(p, type(e)) for p, e in errors] == [(t + b"/b", FileNotFoundError),
                                                 (t + b"/d", FileNotFoundError)]

    # Inside a directory that is being walked.
    entries, errors = deleting_walk(top, b"c/w/f", lambda: os.unlink(t + b"/c/y"))
    assert relpaths(entries) == [b"a/x", b"a", b"c/w/f", b"c/w", b"c/z", b"c", b"e", b""]
    assert [(p, e.errno) for p, e in errors] == [(t + b"/c/y", errno.ENOENT)]


def test_entries_deleted_after_listing_in_directory_order_are_reported(tmp_path):
    # Unsorted, the walk takes entries in the order the directory lists them
    # (os.listdir's order), listing ahead of what it stats: everything after
    # the first subdirectory deleted while that subdirectory is walked is
    # reported, nothing before it.
    top = tmp_path / "t"
    make_tree(str(top), dict({"sub": {"x": b""}}, **{"f%02d" % i: b"" for i in range(40)}))
    t = os.fsencode(str(top))
    order = os.listdir(t)
    at = order.index(b"sub")
    require(0 < at < len(order) - 1, "sub is first or last in this directory's order")
    after = order[at + 1:]

    def delete_after():
        for name in after:
            os.unlink(t + b"/" + name)

    entries, errors = deleting_walk(top, b"sub/x", delete_after, sort=False)
    assert relpaths(entries) == order[:at] + [b"sub/x", b"sub", b""]
    assert [(p, e.errno) for p, e in errors] == [(t + b"/" + name, errno.ENOENT) for name in after]


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_followed(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"a": b"", "c": {"x": b""}})
    t = os.fsencode(str(top))

    def swap():
        shutil.rmtree(t + b"/c")
        os.symlink(b"/", t + b"/c")

    # ``c`` was listed as a directory; when the walk gets to it, it is a symlink to /.
    entries, errors = deleting_walk(top, b"a", swap)
    assert errors == []
    assert relpaths(entries) == [b"a", b"c", b""]
    assert entries[1].type == "symlink"


def test_default_on_error_raises_walkerror_and_releases_descriptors(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"a": {"x": b""}, "b": b"", "sub": {"c": b""}})
    t = os.fsencode(str(top))
    fds_before = open_fds()
    walker = walk(top, sort=True)
    assert next(walker).relpath == b"a/x"
    os.unlink(t + b"/b")

    with pytest.raises(WalkError) as caught:
        list(walker)

    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == t + b"/b"
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert isinstance(caught.value, OSError)
    assert open_fds() == fds_before


def test_an_on_error_that_raises_stops_the_walk(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"a": b"", "sub": {"b": {"x": b""}, "c": b""}})
    t = os.fsencode(str(top))

    class Stop(Exception):
        pass

    def on_error(path, exc):
        raise Stop(path)

    walker = walk(top, sort=True, on_error=on_error)
    assert next(walker).relpath == b"a"
    assert next(walker).relpath == b"sub/b/x"
    os.unlink(t + b"/sub/c")
    assert next(walker).relpath == b"sub/b"
    with pytest.raises(Stop) as caught:
        next(walker)
    assert caught.value.args == (t + b"/sub/c",)


def run_script(script, *args):
    """Run ``script`` in a fresh Python; the values it printed, one per line."""
    proc = subprocess.run([sys.executable, "-c", script] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    return [ast.literal_eval(line) for line in proc.stdout.splitlines()]


UNPRIVILEGED_WALK = textwrap.dedent("""
    import os, sys
    from vz7native import walk as walkmod
    from vz7native.walk import walk, WalkError
    walkmod._CORE = getattr(walkmod, sys.argv[2])
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    errors = []
    entries = [(e.relpath, e.type) for e in
               walk(sys.argv[1], sort=True, on_error=lambda p, e: errors.append((p, e.errno)))]
    print(repr(entries))
    print(repr(errors))
    try:
        list(walk(sys.argv[1], sort=True))
    except WalkError as exc:
        print(repr((exc.filename, exc.errno)))
""")


@pytest.fixture
def shared_tmp():
    """A scratch directory other users can reach (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="vz7n-walk-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.root
def test_unreadable_directories_are_reported_yielded_and_skipped(shared_tmp, core):
    # Root reads every directory whatever its mode, so the walk runs as nobody:
    # this proves what an unprivileged walker sees (EACCES from opening a
    # directory and from stat'ing inside a directory without search permission).
    top = os.path.join(shared_tmp, "t")
    make_tree(top, {"a": {"f": b""}, "locked": {"secret": b""}, "listable": {"g": b""}, "z": b""})
    os.chmod(os.path.join(top, "locked"), 0)
    os.chmod(os.path.join(top, "listable"), 0o444)  # may be listed, not searched
    entries, errors, raised = run_script(UNPRIVILEGED_WALK, top, CORES[core].__name__)
    t = os.fsencode(top)
    assert entries == [(b"a/f", "file"), (b"a", "dir"), (b"listable", "dir"), (b"locked", "dir"),
                       (b"z", "file"), (b"", "dir")]
    assert errors == [(t + b"/listable/g", errno.EACCES), (t + b"/locked", errno.EACCES)]
    assert raised == (t + b"/listable/g", errno.EACCES)


OUT_OF_DESCRIPTORS_WALK = textwrap.dedent("""
    import resource, sys
    from vz7native import walk as walkmod
    from vz7native.walk import walk
    walkmod._CORE = getattr(walkmod, sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    errors = []
    entries = [e.relpath for e in
               walk(sys.argv[1], sort=True, on_error=lambda p, e: errors.append((p, e.errno)))]
    print(repr(entries))
    print(repr(errors))
""")


def test_running_out_of_descriptors_is_reported_and_the_walk_goes_on(tmp_path, core):
    top = tmp_path / "t"
    deep = top / "a" / "/".join(["d"] * 40)
    deep.mkdir(parents=True)
    (top / "z").write_bytes(b"")
    entries, errors = run_script(OUT_OF_DESCRIPTORS_WALK, str(top), "24", CORES[core].__name__)
    assert len(errors) == 1
    failed, code = errors[0]
    assert code == errno.EMFILE
    # The directory that could not be opened is still there, the walk finished
    # the rest of the tree, and only what lies below it is missing.
    rel = os.path.relpath(failed, os.fsencode(str(top)))
    assert rel in entries and rel.startswith(b"a/d/")
    assert entries[-2:] == [b"z", b""]
    assert len(entries) == rel.count(b"/") + 3


def test_excludes_by_absolute_and_relative_path(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {"a": {"b": {"c": b""}, "bc": b"", "x": b""}, "b": b""})
    t = os.fsencode(str(top))
    everything = sorted(reference(top))
    without_a_b = [r for r in everything if r not in (b"a/b", b"a/b/c")]

    for pattern in (t + b"/a/b", t + b"/a/b/", t + b"//a/./b", b"a/b", "a/b/"):
        entries, errors = collect(top, excludes=[pattern])
        assert errors == []
        assert sorted(relpaths(entries)) == without_a_b, pattern
    entries, _ = collect(top, excludes=[t + b"/a"])
    assert sorted(relpaths(entries)) == [b"", b"b"]
    # Paths elsewhere exclude nothing; top itself is never excluded.
    assert sorted(relpaths(collect(top, excludes=["/elsewhere/a/b", t])[0])) == everything


def test_excludes_by_glob_on_names_and_paths(tmp_path):
    top = tmp_path / "t"
    make_tree(str(top), {
        "keep.txt": b"", "drop.tmp": b"",
        "home": {"ann": {".cache": {"big": b""}, "notes.tmp": b"", "doc": b""},
                 "bob": {"deep": {".cache": {"x": b""}}, ".cachex": b""}},
        ".cache": b""})
    t = os.fsencode(str(top))

    def left(*patterns):
        entries, errors = collect(top, excludes=list(patterns))
        assert errors == []
        return sorted(relpaths(entries))

    everything = sorted(reference(top))

    def minus(*gone):
        return [r for r in everything if not any(r == g or r.startswith(g + b"/") for g in gone)]

    # A name at any depth, exact or glob; a trailing / changes nothing.
    assert left(".cache") == minus(b".cache", b"home/ann/.cache", b"home/bob/deep/.cache")
    assert left(b".cache/") == left(".cache")
    assert left("*.tmp") == minus(b"drop.tmp", b"home/ann/notes.tmp")
    assert left("[.]cache*") == minus(b".cache", b"home/ann/.cache", b"home/bob/deep/.cache",
                                      b"home/bob/.cachex")
    # Path globs, relative to top or absolute; fnmatch's * crosses /.
    assert left("home/*/.cache") == minus(b"home/ann/.cache", b"home/bob/deep/.cache")
    assert left(t + b"/home/*/.cache") == left("home/*/.cache")
    assert left("home/?nn") == minus(b"home/ann")
    assert left("*.tmp", "home/bob", t + b"/keep.txt") == minus(
        b"drop.tmp", b"home/ann/notes.tmp", b"home/bob", b"keep.txt")
    # Top is yielded even when its own name matches.
    assert left("t") == everything


def test_excluded_entries_are_never_stat_ed(tmp_path):
    # Excluded entries deleted after listing raise nothing: they are matched
    # by name, before any stat or open; the one not excluded is reported.
    top = tmp_path / "t"
    make_tree(str(top), {"a": {"x": b""}, "b.tmp": b"", "c.tmp": {"x": b""}, "d": b"",
                         "e": {"y": b""}})
    t = os.fsencode(str(top))

    def delete():
        os.unlink(t + b"/b.tmp")
        shutil.rmtree(t + b"/c.tmp")
        os.unlink(t + b"/d")
        shutil.rmtree(t + b"/e")

    entries, errors = deleting_walk(top, b"a/x", delete, excludes=["*.tmp", "e"])
    assert relpaths(entries) == [b"a/x", b"a", b""]
    assert [p for p, e in errors] == [t + b"/d"]


def test_glob_characters_in_top_are_taken_literally(tmp_path):
    top = tmp_path / "t[1]*"
    make_tree(str(top), {"sub": {"x1": b"", "y": b""}})
    entries, _ = collect(top, excludes=["sub/x*"])
    assert sorted(relpaths(entries)) == [b"", b"sub", b"sub/y"]


def test_balloon_file_is_skipped_in_top_only_when_asked(tmp_path):
    top = tmp_path / "ct"
    balloon = walkmod.BALLOON_NAME.decode()
    make_tree(str(top), {balloon: b"", "etc": {balloon: b"", "hosts": b""}})

    kept, _ = collect(top)
    skipped, errors = collect(top, skip_balloon=True)

    assert errors == []
    assert walkmod.BALLOON_NAME in [e.relpath for e in kept]
    assert sorted(relpaths(skipped)) == sorted(
        [b"", b"etc", b"etc/hosts", b"etc/" + walkmod.BALLOON_NAME])
    root_skipped, _ = collect(top / "etc", skip_balloon=True)
    assert sorted(relpaths(root_skipped)) == [b"", b"hosts"]


def test_bad_arguments_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="order"):
        walk(tmp_path, order="depth")
    with pytest.raises(TypeError, match="excludes must be a sequence"):
        walk(tmp_path, excludes="*.tmp")
    with pytest.raises(TypeError, match="excludes: each pattern"):
        walk(tmp_path, excludes=[42])
    with pytest.raises(ValueError, match="excludes: '/' is no pattern"):
        walk(tmp_path, excludes=["/"])
    with pytest.raises(ValueError, match="excludes: b'' is no pattern"):
        walk(tmp_path, excludes=[b""])
    with pytest.raises(TypeError, match="on_error"):
        walk(tmp_path, on_error="print")
    with pytest.raises(FileNotFoundError):
        list(walk(tmp_path / "missing"))


def test_forms_of_top(tmp_path, monkeypatch):
    top = tmp_path / "t"
    make_tree(str(top), {"f": b"1", "d": {"g": b""}})
    t = os.fsencode(str(top))
    os.symlink("t", str(tmp_path / "link"))
    monkeypatch.chdir(str(tmp_path))

    for given in (top, str(top), t, t + b"/", "t", b"./t/", str(top / "d" / "..")):
        entries, _ = collect(given)
        assert entries[-1].path == t
        assert sorted(e.path for e in entries) == sorted([t, t + b"/f", t + b"/d", t + b"/d/g"])
    # A symlink given as top is followed; the paths keep the name given.
    entries, _ = collect("link")
    assert sorted(relpaths(entries)) == [b"", b"d", b"d/g", b"f"]
    assert entries[-1].path == os.fsencode(str(tmp_path / "link")) and entries[-1].type == "dir"
    # A file as top yields itself.
    entries, _ = collect("t/f")
    assert [(e.path, e.relpath, e.type, e.stat.st_size) for e in entries] == [(t + b"/f", b"", "file", 1)]
    root_entry = next(walk("/", order="pre"))
    assert (root_entry.path, root_entry.relpath, root_entry.name) == (b"/", b"", b"")


@pytest.fixture
def tmpfs_inside(tmp_path):
    """A small tmpfs mounted at ``tmp_path/t/mnt``, unmounted afterwards."""
    require(shutil.which("mount") is not None, "needs mount(8)")
    mnt = tmp_path / "t" / "mnt"
    mnt.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "vz7n-walk-test", str(mnt)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    require(proc.returncode == 0, "cannot mount a tmpfs: " + proc.stdout)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.root
def test_one_file_system_stops_at_a_mount_point(tmpfs_inside):
    top = tmpfs_inside.parent
    make_tree(str(top), {"a": b"", "d": {"b": b""}})
    make_tree(str(tmpfs_inside), {"inner": {"c": b""}, "x": b""})

    everything, errors = collect(top)
    one_fs, errors_one_fs = collect(top, one_file_system=True)

    assert errors == errors_one_fs == []
    assert sorted(relpaths(everything)) == [b"", b"a", b"d", b"d/b", b"mnt", b"mnt/inner",
                                            b"mnt/inner/c", b"mnt/x"]
    # The mount point itself is kept (a restore recreates it), not what is in it.
    assert sorted(relpaths(one_fs)) == [b"", b"a", b"d", b"d/b", b"mnt"]
    mount_point = [e for e in one_fs if e.relpath == b"mnt"][0]
    assert mount_point.stat.st_dev != one_fs[-1].stat.st_dev


INTERPRETER_JOB = r"""
import sys
from vz7native import walk
walk._CORE = getattr(walk, {core!r})
top = {top!r}
entries = list(walk.walk(top, sort=True, skip_balloon=True))
with open(top + "/result", "w") as f:
    f.write("%d %s %s %s" % (len(entries), entries[0].relpath, entries[-1].relpath == b"",
                             "ctypes" in sys.modules))
"""


def test_walks_in_concurrent_sub_interpreters(tmp_path, core):
    # As Bareos runs jobs: a fresh sub-interpreter per job, several at once.
    interpreters = pytest.importorskip(
        "_xxsubinterpreters", reason="this Python offers no sub-interpreters")
    tops = []
    for n in range(6):
        top = tmp_path / ("job%d" % n)
        make_tree(str(top), {"d0": {}, "d1": {"f": b""}})
        for j in range(260 + n):  # more than one batch
            os.mknod(str(top / "d0" / ("f%03d" % j)), 0o644 | stat.S_IFREG)
        tops.append(str(top))
    failures = []

    def job(top):
        iid = interpreters.create()
        try:
            interpreters.run_string(iid, INTERPRETER_JOB.format(core=CORES[core].__name__,
                                                                top=top))
        except Exception as e:
            failures.append("%s: %s" % (top, e))
        finally:
            interpreters.destroy(iid)

    for round_ in range(2):
        threads = [threading.Thread(target=job, args=(top,)) for top in tops[round_::2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    for n, top in enumerate(tops):
        with open(os.path.join(top, "result")) as f:
            assert f.read() == "%d b'd0/f000' True False" % (264 + n), top


@pytest.fixture(scope="module")
def fuse_tree_mount(tmp_path_factory):
    """tests/fuse_tree.py served at a fresh mount point: (mount point, getattr log)."""
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    base = tmp_path_factory.mktemp("fuse-tree")
    mnt, log = base / "mnt", base / "getattr.log"
    mnt.mkdir()
    log.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, fuse_tree.__file__, str(mnt), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(str(mnt)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        require(os.path.ismount(str(mnt)), "cannot serve the FUSE test tree")
        yield mnt, log
    finally:
        if os.path.ismount(str(mnt)):
            subprocess.run(["umount", str(mnt)], check=True)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.root
@pytest.mark.parametrize("sort", [False, True])
def test_a_listing_that_fails_part_way_is_reported_and_what_was_read_is_kept(fuse_tree_mount, sort):
    mnt, _ = fuse_tree_mount
    m = os.fsencode(str(mnt))
    entries, errors = collect(mnt, sort=sort)

    assert [(p, e.errno) for p, e in errors] == [(m + b"/broken", errno.EIO)]
    broken = sorted(e.name for e in entries if e.relpath.startswith(b"broken/"))
    assert broken == [b"n%03d" % i for i in range(fuse_tree.LISTED_BEFORE_FAILURE)]
    found = {e.relpath: e.type for e in entries}
    # The directory is yielded all the same, and the walk went on past it.
    assert found[b"broken"] == "dir" and found[b"z"] == "file" and found[b""] == "dir"
    assert len(entries) == fuse_tree.LISTED_BEFORE_FAILURE + 13


@pytest.mark.root
@pytest.mark.parametrize("sort", [False, True])
def test_entries_listed_without_a_type_are_told_apart_by_lstat(fuse_tree_mount, sort):
    mnt, log = fuse_tree_mount
    entries, _ = collect(mnt, sort=sort)
    found = {e.relpath: e.type for e in entries if e.relpath.startswith(b"unknown")}
    assert found == {b"unknown": "dir", b"unknown/file": "file", b"unknown/skip.tmp": "file",
                     b"unknown/link": "symlink", b"unknown/subdir": "dir",
                     b"unknown/subdir/inner": "file"}

    # Excludes are matched on the listed names before any stat, even when the
    # listing does not say what an entry is.
    log.write_bytes(b"")
    entries, _ = collect(mnt, sort=sort, excludes=["*.tmp"])
    assert b"unknown/skip.tmp" not in [e.relpath for e in entries]
    stated = log.read_bytes().splitlines()
    assert b"/unknown/file" in stated and b"/unknown/link" in stated
    assert b"/unknown/skip.tmp" not in stated
