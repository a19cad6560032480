"""Images made to hurt: files that are not regular files, headers that lie about
the BAT. Checked through the CLI in a child process, so that a regression shows
as a timeout or a memory figure instead of a hung or swapping test run."""
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import sys

import pytest

from vz7native import image
from vz7native.image.delta import Header, metadata_size

MiB = 1 << 20
VZ7PLOOP = os.path.join(os.path.dirname(sys.executable), "vz7ploop")
# Far more than any check of a small image needs; far less than a hang.
CHILD_TIMEOUT = 60
EXIT_FORMAT, EXIT_DESCRIPTOR = 11, 39


def vz7ploop(*args):
    """(exit code, stdout, stderr) of ``vz7ploop args``; fails the test if it hangs."""
    proc = subprocess.Popen([VZ7PLOOP] + [os.fsdecode(a) for a in args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("vz7ploop %s hung (killed after %d s)" % (
            " ".join(os.fsdecode(a) for a in args), CHILD_TIMEOUT))
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def peak_rss(*args):
    """Exit code and peak RSS (bytes) of ``vz7ploop args``, run by a fresh Python
    whose only child it is (RUSAGE_CHILDREN then measures just that command)."""
    code = ("import resource, subprocess, sys;"
            "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL,"
            " stderr=subprocess.DEVNULL);"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.check_output([sys.executable, "-c", code, VZ7PLOOP] +
                                  [os.fsdecode(a) for a in args], timeout=CHILD_TIMEOUT)
    rc, kib = out.split()
    return int(rc), int(kib) * 1024


@pytest.fixture
def small_image(tmp_path):
    """(descriptor, delta): a 16 MiB ploop1 image holding one cluster of data."""
    raw = str(tmp_path / "disk.raw")
    with open(raw, "wb") as f:
        f.truncate(16 * MiB)
        f.write(b"data")
    dd = image.import_raw(raw, str(tmp_path / "img"))
    return dd, os.path.join(os.path.dirname(dd), b"root.hds")


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo", "directory", "device"])
def test_a_delta_that_is_no_regular_file_is_refused_at_once(small_image, kind):
    dd, delta = small_image
    os.unlink(delta)
    if kind == "fifo":
        os.mkfifo(delta)
    elif kind == "symlink to a fifo":
        os.mkfifo(delta + b".fifo")
        os.symlink(os.path.basename(delta) + b".fifo", delta)
    elif kind == "directory":
        os.mkdir(delta)
    else:
        os.mknod(delta, 0o600 | stat.S_IFCHR, os.makedev(1, 5))      # /dev/zero
    what = {"fifo": "a FIFO", "symlink to a fifo": "a FIFO", "directory": "a directory",
            "device": "a character device"}[kind]
    message = "delta %s is %s, not a regular file" % (os.fsdecode(delta), what)
    rc, out, _ = vz7ploop("check", dd)
    assert rc == EXIT_FORMAT and message in out
    with pytest.raises(image.FormatError) as err:
        image.open_virtual_disk(dd)
    assert str(err.value) == message
    assert image.verify(dd).problems == [message]


def test_a_descriptor_that_is_a_fifo_is_refused_at_once(tmp_path):
    dd = os.fsencode(str(tmp_path / "DiskDescriptor.xml"))
    os.mkfifo(dd)
    rc, out, _ = vz7ploop("check", dd)
    assert rc == EXIT_FORMAT
    assert "descriptor %s is a FIFO, not a regular file" % os.fsdecode(dd) in out
    with pytest.raises(image.DescriptorError, match="is a FIFO, not a regular file"):
        image.read_descriptor(dd)


def _lying_delta(path, clusters, file_size, fill_bat=False):
    """A v2 delta of 1 MiB clusters whose header claims ``clusters`` BAT entries
    (and the disk size to match), in a sparse file of ``file_size`` bytes."""
    header = Header.for_disk(clusters * MiB, MiB, 2)
    with open(path, "wb") as f:
        f.truncate(file_size)
        f.write(header.pack())
        if fill_bat:
            f.write(bytes(4 * clusters))
    return header


def test_a_header_claiming_a_huge_bat_is_refused_before_it_is_read(small_image):
    dd, delta = small_image
    clusters = 1 << 29                  # a 2 GiB BAT, in a 3 GiB file that is all hole
    header = _lying_delta(delta, clusters, 3 << 30)
    assert header.first_block_offset == metadata_size(clusters, MiB) < 3 << 30
    rc, out, _ = vz7ploop("check", dd)
    assert rc == EXIT_FORMAT
    assert "its BAT (536870912 entries, up to byte 2147483712) has a hole at byte" in out
    rc, peak = peak_rss("check", dd)
    assert rc == EXIT_FORMAT and peak < 200 * MiB
    with pytest.raises(image.FormatError, match="has a hole"):
        image.open_virtual_disk(dd)


def test_a_header_claiming_a_bat_past_the_end_is_refused(small_image):
    dd, delta = small_image
    _lying_delta(delta, 1 << 20, 2 * MiB)            # needs a 4 MiB BAT
    with pytest.raises(image.FormatError, match="is truncated: 2097152 bytes, but its header "
                       "and BAT need 5242880"):
        image.open_virtual_disk(dd)


def test_a_large_bat_is_read_in_pieces(small_image):
    """A BAT of 1.5 M entries (6 MiB, several read pieces) that is really in the
    file reads whole; the header and the descriptor then disagree on the size."""
    dd, delta = small_image
    clusters = 3 << 19
    _lying_delta(delta, clusters, metadata_size(clusters, MiB), fill_bat=True)
    report = image.verify(dd)
    assert report.deltas[0].clusters == 0
    assert any("the header says the disk has %d bytes" % (clusters * MiB) in p
               for p in report.problems), report.problems


def _point_file_to(dd, name):
    text = open(dd, "rb").read()
    start = text.index(b"<File>") + len(b"<File>")
    with open(dd, "wb") as f:
        f.write(text[:start] + name + text[text.index(b"</File>"):])


@pytest.mark.parametrize("name", [b"../../other/root.hds", b"sub/../../root.hds", b".."])
def test_a_relative_file_that_leaves_the_image_directory_is_refused(small_image, name):
    dd, delta = small_image
    _point_file_to(dd, name)
    message = "<File> %s leads out of the image directory" % os.fsdecode(name)
    with pytest.raises(image.DescriptorError, match=message):
        image.read_descriptor(dd)
    rc, out, _ = vz7ploop("check", dd)
    assert rc == EXIT_FORMAT and message in out


def test_check_says_where_each_delta_lives(small_image, tmp_path):
    dd, delta = small_image
    elsewhere = os.fsencode(str(tmp_path / "elsewhere"))
    os.mkdir(elsewhere)
    moved = os.path.join(elsewhere, b"root.hds")
    os.rename(delta, moved)
    _point_file_to(dd, moved)                   # absolute, as restore-descriptor writes
    report = image.verify(dd)
    assert report.ok
    assert (report.deltas[0].file, report.deltas[0].real_file, report.deltas[0].outside) == (
        moved, moved, True)
    rc, out, _ = vz7ploop("check", dd)
    assert rc == 0
    assert "%s: ploop1 v1, 1 cluster(s) of 1.0 MiB (outside the image directory: %s)" % (
        os.fsdecode(moved), os.fsdecode(moved)) in out
    os.symlink(moved, delta)                    # inside by name, outside in fact
    _point_file_to(dd, b"root.hds")
    assert image.verify(dd).deltas[0][-2:] == (moved, True)
    assert "(outside the image directory: %s)" % os.fsdecode(moved) in vz7ploop("check", dd)[1]
    os.unlink(delta)
    os.rename(moved, delta)
    assert image.verify(dd).deltas[0][-2:] == (delta, False)
    assert "outside" not in vz7ploop("check", dd)[1]


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.fstat(f.fileno()).st_size


def test_write_clusters_on_a_full_disk_leaves_the_image_as_it_was(small_image, tmp_path,
                                                                   tmpfs_at):
    dd, delta = small_image
    room = tmpfs_at(b"full", options=b"size=8m")
    image_dir = os.path.join(room, b"img")
    shutil.copytree(os.path.dirname(dd), image_dir)
    dd = os.path.join(image_dir, b"DiskDescriptor.xml")
    delta = os.path.join(image_dir, b"root.hds")
    before = _digest(delta), _digest(dd)
    # The delta holds cluster 0 and takes 2 MiB of the 8: 12 new clusters do not fit.
    changed = os.path.join(os.fsencode(str(tmp_path)), b"changed.raw")
    with open(changed, "wb") as f:
        f.truncate(16 * MiB)
        for index in range(12):
            f.seek((index + 2) * MiB)
            f.write(b"cluster %d" % index)
        f.seek(0)
        f.write(b"DATA")                        # cluster 0 changes in place
    with pytest.raises(image.WriteError) as err:
        image.write_clusters(dd, changed)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert str(err.value) == "[Errno 28] cannot write %s: No space left on device; the image " \
        "is as it was" % os.fsdecode(delta)
    assert (_digest(delta), _digest(dd)) == before
    assert image.verify(dd).ok
    with image.open_virtual_disk(dd) as disk:
        assert disk.read(0, 4) == b"data"


def test_import_raw_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, tmpfs_at):
    raw = os.path.join(os.fsencode(str(tmp_path)), b"disk.raw")
    with open(raw, "wb") as f:
        f.write(os.urandom(4 * MiB))
    room = tmpfs_at(b"full", options=b"size=2m")
    with pytest.raises(image.WriteError, match=r"cannot write .*/img/root\.hds: No space left "
                       r"on device; nothing is left of the new image") as err:
        image.import_raw(raw, os.path.join(room, b"img"))
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(room) == []
