"""restore=ct through the FD simulator: a backed-up container rebuilt on a sandbox
host (new private area, fresh ploop disk of any size, registered, stopped), its
filesystem equal to the backed-up one entry by entry in every attribute; every
refusal before anything is created; a killed restore and a clean retry; Bareos
20 to 25, the C locale, a Full + Incremental chain."""
import os
import shutil
import signal
import stat
import time

import pytest

from conftest import require
from ct_tree import compare_trees
from fdsim.testing import make_director, plugin_line
from ploop_tools import check_deltas
from restore_helpers import (add_exact_entries, assert_exact, edit_image, host_state,
                             image_view, mounts_under, picture_of_image, stand_in_prlctl)
from vz7native import image
from vz7native.host import STOPPED
from vz7native.host.sandbox import Sandbox
from vz7native.restore import STAGING_PREFIX

pytestmark = pytest.mark.root

PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "src", "plugin")
NEW_UUIDS = ["7a0c%04x-1111-4222-8333-444455556666" % n for n in range(100)]


class Site(object):
    """The module's sandbox host, its director and the Full backup of web01."""

    def __init__(self, base):
        self.base = base
        self.root = os.path.join(base, "host")
        self.box = Sandbox.build(self.root, count=4, seed=11, running=())
        self.host = self.box.host
        self.web, self.db, self.spare, self.cache = self.box.containers
        for ct in (self.web, self.spare):
            edit_image(ct.disk_descriptor, os.path.join(base, "edit"), add_exact_entries)
        self.directors = {}
        self.views = 0
        self.uuids = iter(NEW_UUIDS)
        self.original = self.picture(self.web.disk_descriptor)
        assert b"exact/holes" in self.original
        self.full = self.backup(self.web)
        stored = [r["path"] for r in self.director().files(self.full.jobid)]
        assert any(p.endswith("/exact/holes") for p in stored), self.full.report()

    def director(self, version=23, c_locale=False):
        key = (version, c_locale)
        if key not in self.directors:
            self.directors[key] = make_director(
                os.path.join(self.base, "fdsim-%d%s" % (version, "-c" if c_locale else "")),
                bareos_version=version, isolation="process", c_locale=c_locale)
        return self.directors[key]

    def line(self):
        return plugin_line("bareos-fd-vz7_ct_fs", PLUGIN_DIR, host_root=self.root)

    def backup(self, ct, version=23, c_locale=False, **kwargs):
        result = self.director(version, c_locale).backup(
            self.line(), fd_plugin_options=["python3:name=%s:uuid=%s" % (ct.name, ct.uuid)],
            **kwargs)
        assert result.status == "T", result.report()
        return result

    def restore(self, jobid, options, version=23, c_locale=False, **kwargs):
        return self.director(version, c_locale).restore(
            jobid=jobid, plugin_options="python:" + options, **kwargs)

    def picture(self, dd):
        """The image's tree; sockets left out (a backup skips them: nothing can
        restore a socket)."""
        self.views += 1
        picture = picture_of_image(dd, os.path.join(self.base, "view-%d" % self.views))
        return {rel: props for rel, props in picture.items()
                if props["kind"] != stat.S_IFSOCK}

    def new_uuid(self):
        return next(self.uuids)

    def lose(self, ct):
        """The container is gone from the host: unregistered, its private area moved away."""
        for link in (os.path.join(self.root, "etc", "vz", "conf", ct.uuid + ".conf"),
                     os.path.join(self.root, "etc", "vz", "names", ct.name)):
            os.unlink(link)
        moved = os.path.join(self.base, "lost-" + ct.name)
        os.rename(ct.private, moved)
        return moved


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require(os.geteuid() == 0, "needs root (sandbox hosts, loop devices, mounts)")
    base = str(tmp_path_factory.mktemp("restore-ct"))
    bin_dir = os.path.join(base, "bin")
    stand_in_prlctl(bin_dir, os.path.join(base, "host"))
    path = os.environ["PATH"]
    os.environ["PATH"] = bin_dir + os.pathsep + path
    site = None
    try:
        site = Site(base)
        yield site
    finally:
        os.environ["PATH"] = path
        if site is not None:
            site.box.close()


def fatal_texts(result):
    return [e.text for e in result.log if e.type == "M_FATAL"]


def no_staging_left(site):
    private = os.path.join(site.root, "vz", "private")
    assert not [n for n in os.listdir(private) if n.startswith(os.fsdecode(STAGING_PREFIX))]
    assert mounts_under(site.root) == []


def check_restored(site, uuid, name, size, result):
    assert result.status == "T", result.report()
    ct = site.host.find(uuid=uuid)
    assert ct.name == name
    assert site.host.status(ct).state == STOPPED
    dd = ct.disk_descriptor
    assert image.read_descriptor(dd).size == size
    assert image.verify(dd).ok
    check_deltas([entry.file for entry in image.read_descriptor(dd).images.values()])
    with open(os.path.join(ct.private, b"ve.conf"), "rb") as f:
        config = f.read().decode()
    assert 'NAME="%s"' % name in config and 'VEID="%s"' % uuid in config
    assert 'DISKSPACE="%d:%d"' % (size // 1024, size // 1024) in config
    assert [p for p in compare_trees(site.web.private, ct.private, ignore=(b"root.hdd",))
            if not p.startswith("ve.conf:")] == []
    no_staging_left(site)
    assert_exact(site.original, site.picture(dd))
    return ct


def test_a_new_container_beside_the_original_on_a_larger_disk(site):
    uuid = site.new_uuid()
    result = site.restore(site.full.jobid, "restore=ct:new_name=web-copy:new_uuid=%s:disk=200M"
                          % uuid)
    ct = check_restored(site, uuid, "web-copy", 200 << 20, result)
    assert any(e.type == "M_INFO" and "where=" in e.text and "is ignored" in e.text
               for e in result.log), result.report()
    assert ct.root == site.host.real(b"/vz/root/" + uuid.encode())
    assert os.listdir(ct.root) == []
    # the original is still there, untouched
    assert site.host.find(uuid=site.web.uuid).name == site.web.name


def test_a_smaller_disk_and_a_second_copy_side_by_side(site):
    first, second = site.new_uuid(), site.new_uuid()
    for uuid, name in ((first, "web-small"), (second, "web-small2")):
        result = site.restore(site.full.jobid, "restore=ct:new_name=%s:new_uuid=%s:diskspace=48M"
                              % (name, uuid))
        check_restored(site, uuid, name, 48 << 20, result)
    names = {ct.name for ct in site.host.containers()[0]}
    assert {"web-small", "web-small2", site.web.name} <= names


def test_sparse_files_stay_sparse_and_zero_runs_inside_blocks_are_holes(site):
    uuid = site.new_uuid()
    result = site.restore(site.full.jobid, "restore=ct:new_name=web-sparse:new_uuid=%s" % uuid)
    assert result.status == "T", result.report()
    with image_view(site.host.find(uuid=uuid).disk_descriptor,
                    os.path.join(site.base, "sparse-view")) as root:
        st = os.lstat(os.path.join(root, b"exact", b"holes"))
        # 4 KiB + 4 KiB + 8 KiB of data in an 8 MiB file; the 60 KiB zero run is a hole
        assert st.st_size == 8 << 20
        assert st.st_blocks * 512 <= 16 << 10


BAD_OPTIONS = [
    ("restore=bogus", "option restore=bogus is not one of ct, files"),
    ("restore=ct:disk=lots", "option disk=lots is not a size"),
    ("restore=ct:diskspace=0", "option diskspace=0 is not a size larger than 0"),
    ("restore=ct:disk=1G:diskspace=2G", "options diskspace=2G and disk=1G disagree"),
    ("restore=ct:new_name=x:new_uuid=nope", "new_uuid=nope is not a UUID"),
    ("restore=ct:colour=blue", "unknown plugin option colour (known: "),
    ("restore=ct:register_timeout=soon", "option register_timeout=soon is not a number"),
    ("restore=ct", "a container named 'web01' exists on this host"),
    ("restore=ct:new_name=other", "a container with uuid %(uuid)s exists on this host"),
    ("restore=ct:new_name=tiny:new_uuid=%(new)s:disk=24M",
     "does not fit a disk of 24 MiB: it used"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_bad_input_is_refused_before_anything_is_created(site, options, message):
    values = {"uuid": site.web.uuid, "new": site.new_uuid()}
    before = host_state(site.root)
    result = site.restore(site.full.jobid, options % values)
    assert result.status == "f", result.report()
    assert any(message % values in text for text in fatal_texts(result)), result.report()
    assert len(fatal_texts(result)) == 1, result.report()
    assert host_state(site.root) == before
    no_staging_left(site)


@pytest.mark.parametrize("where", ["private", "root"])
def test_a_private_area_or_root_in_the_way_is_refused(site, where):
    uuid = site.new_uuid()
    directory = os.path.join(site.root, "vz", where, uuid)
    os.makedirs(directory)
    with open(os.path.join(directory, "someone-elses"), "w") as f:
        f.write("keep me\n")
    before = host_state(site.root)
    result = site.restore(site.full.jobid, "restore=ct:new_name=blocked-%s:new_uuid=%s"
                          % (where, uuid))
    assert result.status == "f"
    what = "private area" if where == "private" else "root directory"
    assert any("the %s /vz/%s/%s of container 'blocked-%s' (%s) exists and is not empty"
               % (what, where, uuid, where, uuid) in t for t in fatal_texts(result)), \
        result.report()
    assert host_state(site.root) == before
    with open(os.path.join(directory, "someone-elses")) as f:
        assert f.read() == "keep me\n"
    shutil.rmtree(directory)


def test_a_killed_restore_is_cleaned_up_by_the_next_one(site):
    uuid = site.new_uuid()
    staging = os.path.join(site.root, "vz", "private", os.fsdecode(STAGING_PREFIX) + uuid)
    options = "restore=ct:new_name=web-killed:new_uuid=%s" % uuid
    with site.director().file_daemon() as fd:
        job = fd.start_restore(jobid=site.full.jobid, plugin_options="python:" + options)
        deadline = time.monotonic() + 60
        while not (mounts_under(staging) and os.path.exists(
                os.path.join(staging, "mnt", "etc"))):
            assert time.monotonic() < deadline, "the restore never got under way"
            time.sleep(0.01)
        os.kill(fd.pid, signal.SIGKILL)
        killed = job.wait(60)
        assert killed.status != "T"
    assert mounts_under(staging), "the killed restore should have left its mount"
    assert not os.path.exists(os.path.join(site.root, "vz", "private", uuid))
    assert not os.path.exists(os.path.join(site.root, "etc", "vz", "conf", uuid + ".conf"))
    result = site.restore(site.full.jobid, options)
    assert any("removed what an interrupted restore of container 'web-killed' (%s) left" % uuid
               in e.text and "the mount at" in e.text for e in result.log), result.report()
    check_restored(site, uuid, "web-killed", site.web.disk_size, result)
    with open("/proc/self/mountinfo") as f:
        assert staging not in f.read()
    loops = os.popen("losetup -a").read()
    assert staging not in loops


@pytest.mark.parametrize("version, c_locale", [(20, False), (22, False), (25, False),
                                               (23, True)])
def test_bareos_versions_and_the_c_locale(site, version, c_locale):
    full = site.backup(site.web, version=version, c_locale=c_locale)
    uuid = site.new_uuid()
    name = "web-v%d%s" % (version, "c" if c_locale else "")
    result = site.restore(full.jobid, "restore=ct:new_name=%s:new_uuid=%s" % (name, uuid),
                          version=version, c_locale=c_locale, debug_level=200)
    check_restored(site, uuid, name, site.web.disk_size, result)
    by_plugin = [e.text for e in result.debug if "data written by the plugin" in e.text]
    if version >= 22:
        # the core writes the data (do_io_in_core) but for the sparse files, whose
        # zero runs the plugin leaves unwritten
        assert sorted(t.split(": ")[-2].rsplit("/", 1)[-1] for t in by_plugin) == \
            ["holes", "sparse.img"], by_plugin
        assert all(t.endswith("(sparse)") for t in by_plugin)
    else:
        assert len([t for t in by_plugin if t.endswith("(no do_io_in_core)")]) > 100


def _later(root):
    """After the Full: a file changed in the directory with a default ACL (the
    directory itself unchanged, so the Incremental holds the file but not the
    directory), and another one elsewhere."""
    with open(os.path.join(root, b"home", b"user", b"notes.txt"), "r+b") as f:
        f.write(b"changed after the Full\n")
    with open(os.path.join(root, b"etc", b"hostname"), "wb") as f:
        f.write(b"renamed.example\n")


def test_full_and_incremental_no_acl_inherited_from_a_default_acl(site):
    spare = site.spare
    full = site.backup(spare)
    edit_image(spare.disk_descriptor, os.path.join(site.base, "edit-later"), _later)
    incremental = site.backup(spare, level="I", accurate=True)
    assert 0 < incremental.files < full.files
    expected = site.picture(spare.disk_descriptor)
    assert "system.posix_acl_default" in expected[b"home/user"]["xattrs"]
    assert expected[b"home/user/notes.txt"]["xattrs"] == {}
    stored = [r["path"] for r in site.director().files(incremental.jobid)]
    assert any(p.endswith("/home/user/notes.txt") for p in stored)
    assert not any(p.rstrip("/").endswith("/home/user") for p in stored)
    uuid = site.new_uuid()
    result = site.restore([full.jobid, incremental.jobid],
                          "restore=ct:new_name=spare-chain:new_uuid=%s" % uuid)
    assert result.status == "T", result.report()
    assert_exact(expected, site.picture(site.host.find(uuid=uuid).disk_descriptor))


def test_two_containers_of_one_job_come_back_together(site):
    line = site.line()
    backup = site.director().backup([line + ":name=%s:uuid=%s" % (ct.name, ct.uuid)
                                     for ct in (site.db, site.cache)])
    assert backup.status == "T", backup.report()
    pictures = {ct.uuid: site.picture(ct.disk_descriptor) for ct in (site.db, site.cache)}
    for ct in (site.db, site.cache):
        site.lose(ct)
    result = site.restore(backup.jobid, "restore=ct")
    assert result.status == "T", result.report()
    for ct in (site.db, site.cache):
        back = site.host.find(uuid=ct.uuid)
        assert back.name == ct.name and site.host.status(back).state == STOPPED
        assert_exact(pictures[ct.uuid], site.picture(back.disk_descriptor))
    no_staging_left(site)


def test_the_seed_example_brings_a_lost_container_back(site):
    """``restore ... pluginoptions="python:restore=ct:disk=250" all done`` after
    the container is gone from the host."""
    web = site.web
    lost = site.lose(web)
    result = site.director().restore(jobid=site.full.jobid,
                                     plugin_options="python:restore=ct:disk=250")
    ct = site.host.find(uuid=web.uuid)
    assert ct.private == web.private
    with open(os.path.join(lost, "ve.conf")) as f:
        config_before = f.read()
    with open(os.path.join(ct.private, b"ve.conf")) as f:
        config = f.read()
    assert config == config_before.replace('DISKSPACE="131072:131072"',
                                           'DISKSPACE="262144000:262144000"')
    check_restored(site, web.uuid, web.name, 250 << 30, result)
    # a 250 GiB disk holding 35 MiB costs about that much on the host
    total = sum(os.stat(e.file).st_blocks * 512
                for e in image.read_descriptor(ct.disk_descriptor).images.values())
    assert total < 200 << 20
