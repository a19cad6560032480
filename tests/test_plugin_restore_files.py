"""restore=files through the FD simulator: files put back into a running
container (the seed's regexwhere, a where under its root), attributes and
directory times exact, each replace policy, symlinks planted on the restore path
before and while the restore runs (a canary tree outside the container's root
stays byte-identical), and every bad input."""
import os
import stat
import threading
import time

import pytest

from conftest import require
from fdsim.testing import make_director, plugin_line
from restore_helpers import assert_exact, exact, image_view
from vz7native.host.sandbox import Sandbox

pytestmark = pytest.mark.root

PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "src", "plugin")
FUTURE = 4000000000          # 2096: newer than anything backed up
PAST = 315532800             # 1980: older


class Site(object):
    def __init__(self, base):
        self.base = base
        self.root = os.path.join(base, "host")
        self.box = Sandbox.build(self.root, count=1, seed=5, running=(0,))
        self.ct = self.box.containers[0]
        self.director = make_director(os.path.join(base, "fdsim"), isolation="process")
        line = plugin_line("bareos-fd-vz7_ct_fs", PLUGIN_DIR, host_root=self.root)
        self.full = self.director.backup(line, fd_plugin_options=[
            "python3:name=%s:uuid=%s" % (self.ct.name, self.ct.uuid)])
        assert self.full.status == "T", self.full.report()
        with image_view(self.ct.disk_descriptor, os.path.join(base, "view")) as view:
            picture = exact(view, atime=False)
        self.expected = {rel: props for rel, props in picture.items()
                         if props["kind"] != stat.S_IFSOCK}
        self.canary = os.path.join(base, "canary")
        os.makedirs(os.path.join(self.canary, "etc"))
        for name in ("file", "etc/hostname", "etc/passwd"):
            with open(os.path.join(self.canary, name), "wb") as f:
                f.write(b"canary %s\n" % name.encode())
        self.canary_picture = exact(self.canary)

    def catalog_root(self):
        return "/mnt/bareos/%s" % self.ct.uuid

    def regexwhere(self, target):
        return "!^/mnt/bareos/%s/!/vz/root/%s/tmp/%s/!" % (self.ct.uuid, self.ct.uuid, target)

    def restore(self, options="restore=files", **kwargs):
        if "select" not in kwargs:  # the container's filesystem, all of it
            kwargs.setdefault("mark", [self.catalog_root() + "/"])
        return self.director.restore(jobid=self.full.jobid, plugin_options="python:" + options,
                                     **kwargs)

    def inside(self, *parts):
        return os.path.join(os.fsdecode(self.ct.root), *parts)

    def assert_canary_intact(self):
        assert_exact(self.canary_picture, exact(self.canary))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require(os.geteuid() == 0, "needs root (sandbox hosts, loop devices, mounts)")
    site = Site(str(tmp_path_factory.mktemp("restore-files")))
    try:
        yield site
    finally:
        site.box.close()


def without_top(picture):
    return {rel: props for rel, props in picture.items() if rel != b"."}


def test_the_seed_regexwhere_restore(site):
    result = site.restore(regexwhere=site.regexwhere("bareos-restore"), select=None)
    assert result.status == "T", result.report()
    assert any("the private area /vz/private/%s is not restored" % site.ct.uuid in e.text
               for e in result.log if e.type == "M_INFO"), result.report()
    restored = exact(site.inside("tmp", "bareos-restore"), atime=False)
    assert_exact(without_top(site.expected), without_top(restored))


def test_a_where_under_the_container_root_with_directory_times_exact(site):
    result = site.restore(where="/vz/root/%s/tmp/w" % site.ct.uuid)
    assert result.status == "T", result.report()
    restored = exact(site.inside("tmp", "w", "mnt", "bareos", site.ct.uuid), atime=False)
    assert_exact(site.expected, restored)       # the top directory's times too


def test_symlinks_planted_before_the_restore(site):
    os.symlink(site.canary, site.inside("tmp", "evil1"))
    result = site.restore(regexwhere=site.regexwhere("evil1"))
    assert result.status == "W", result.report()
    errors = result.plugin_messages("M_ERROR")  # the core adds its CF_ERROR lines
    assert errors and all("not a directory (a symlink or file is in the way)" in t
                          for t in errors), errors[:5]
    os.makedirs(site.inside("tmp", "evil2", "srv"))
    os.symlink(os.path.join(site.canary, "etc"), site.inside("tmp", "evil2", "etc"))
    os.symlink(os.path.join(site.canary, "file"), site.inside("tmp", "evil2", "srv", "ping"))
    result = site.restore(regexwhere=site.regexwhere("evil2"))
    assert result.status == "W", result.report()
    assert any("/tmp/evil2/etc" in e.text for e in result.log if e.type == "M_ERROR")
    ping = os.lstat(site.inside("tmp", "evil2", "srv", "ping"))
    assert stat.S_ISREG(ping.st_mode)               # the planted symlink was replaced
    assert ping.st_mode & 0o7777 == site.expected[b"srv/ping"]["mode"]
    site.assert_canary_intact()


def test_symlinks_planted_while_the_restore_runs(site):
    top = site.inside("tmp", "race")
    done = threading.Event()
    swaps = [0]

    def swap():
        """Whenever the restore has made a directory, put a symlink in its place."""
        while not done.is_set():
            for name in ("etc", "usr", "var", "home", "srv", "deep"):
                path = os.path.join(top, name)
                try:
                    os.rename(path, path + ".moved")
                    os.symlink(os.path.join(site.canary, "etc"), path)
                    swaps[0] += 1
                    time.sleep(0.002)
                    os.unlink(path)
                    os.rename(path + ".moved", path)
                except OSError:
                    pass
            time.sleep(0.001)

    thread = threading.Thread(target=swap)
    thread.start()
    try:
        result = site.restore(regexwhere=site.regexwhere("race"))
    finally:
        done.set()
        thread.join()
    assert result.status in ("T", "W"), result.report()
    assert swaps[0] > 0
    site.assert_canary_intact()


@pytest.mark.parametrize("policy, replaced", [
    ("always", {"hostname", "shadow"}), ("ifnewer", {"shadow"}), ("ifolder", {"hostname"}),
    ("never", set())])
def test_replace_policies(site, policy, replaced):
    target = "rp-" + policy
    select = [site.catalog_root() + "/etc/hostname", site.catalog_root() + "/etc/shadow"]
    first = site.restore(regexwhere=site.regexwhere(target), select=select)
    assert first.status == "T", first.report()
    local = {"hostname": FUTURE, "shadow": PAST}     # newer / older than the backup's
    for name, mtime in local.items():
        path = site.inside("tmp", target, "etc", name)
        with open(path, "wb") as f:
            f.write(b"changed in the container\n")
        os.utime(path, (mtime, mtime))
    result = site.restore(regexwhere=site.regexwhere(target), select=select, replace=policy)
    assert result.status == "T", result.report()
    for name, mtime in local.items():
        path = site.inside("tmp", target, "etc", name)
        with open(path, "rb") as f:
            data = f.read()
        if name in replaced:
            assert data != b"changed in the container\n"
            assert os.lstat(path).st_mtime_ns == site.expected[b"etc/" + name.encode()]["mtime"]
        else:
            assert data == b"changed in the container\n"
            assert os.lstat(path).st_mtime == mtime


@pytest.mark.parametrize("policy", ["never", "ifnewer"])
def test_directories_the_restore_makes_get_their_attributes_whatever_the_policy(site, policy):
    target = "dirs-" + policy
    # everything: hard links of etc/ may have their first name (the data) elsewhere
    result = site.restore(regexwhere=site.regexwhere(target), replace=policy)
    assert result.status == "T", result.report()
    restored = exact(site.inside("tmp", target, "etc"), atime=False)
    want = {rel[len(b"etc/"):] if rel != b"etc" else b".": only_links_within(props, b"etc/")
            for rel, props in site.expected.items() if rel == b"etc" or rel.startswith(b"etc/")}
    assert_exact(want, restored)


def only_links_within(props, prefix):
    """``props`` with its hard-link group cut to the names below ``prefix`` (what a
    picture of that subtree alone shows of it)."""
    props = dict(props)
    if "links" in props:
        props["links"] = [rel[len(prefix):] for rel in props["links"] if rel.startswith(prefix)]
    return props


def test_paths_outside_every_running_container_are_refused(site):
    result = site.restore(where="/tmp/elsewhere")
    assert result.status == "f", result.report()
    fatal = [e.text for e in result.log if e.type == "M_FATAL"]
    assert len(fatal) == 1
    assert "lands in no running container's root" in fatal[0]
    assert site.regexwhere("bareos-restore")[:-1].replace("tmp/bareos-restore/", "") in \
        fatal[0].replace("tmp/bareos-restore/", "")
    assert not os.path.exists(os.path.join(site.root, "tmp", "elsewhere"))
    assert not os.path.exists("/tmp/elsewhere/mnt/bareos/%s" % site.ct.uuid)


@pytest.mark.parametrize("options, message", [
    ("restore=files:name=other", "the options give name 'other', but /vz/root/%(uuid)s/tmp/"
     "bad-%(n)d/|lands in the root of container 'web01' (%(uuid)s)"),
    ("restore=files:uuid=11111111-2222-4333-8444-555555555555",
     "the options give uuid 11111111-2222-4333-8444-555555555555, but"),
    ("restore=files:disk=10", "option disk only apply to restore=ct, not restore=files"),
    ("restore=file:new_name=x", "option new_name only apply to restore=ct"),
])
def test_bad_input(site, options, message):
    n = len(options)
    result = site.restore(options, regexwhere=site.regexwhere("bad-%d" % n))
    assert result.status == "f", result.report()
    fatal = [e.text for e in result.log if e.type == "M_FATAL"]
    assert len(fatal) == 1, fatal
    for part in (message % {"uuid": site.ct.uuid, "n": n}).split("|"):
        assert part in fatal[0], fatal
    assert "regexwhere" not in fatal[0]
    assert not os.path.exists(site.inside("tmp", "bad-%d" % n))


def open_paths(pid):
    fds = "/proc/%d/fd" % pid
    paths = []
    for name in os.listdir(fds):
        try:
            paths.append(os.readlink(os.path.join(fds, name)))
        except FileNotFoundError:
            pass
    return paths


def test_the_fd_holds_nothing_open_in_the_container_after_restores(site):
    """The data fd of each file stays open until its attributes are set: none
    may outlive its file, whether restored, kept by the replace policy or
    refused on a planted symlink."""
    root = os.fsdecode(site.ct.root)
    os.makedirs(site.inside("tmp", "held", "srv"))
    os.symlink(os.path.join(site.canary, "etc"), site.inside("tmp", "held", "etc"))
    with site.director.file_daemon() as fd:
        jobs = [site.restore(regexwhere=site.regexwhere("held"), fd=fd),
                site.restore(regexwhere=site.regexwhere("held"), replace="never", fd=fd)]
        held = [path for path in open_paths(fd.pid) if path.startswith(root + "/")]
    assert held == []
    assert jobs[0].status == "W", jobs[0].report()      # etc: a symlink in the way
    assert jobs[1].status == "T" and jobs[1].plugin_messages("M_SKIPPED"), jobs[1].report()
    assert os.path.isfile(site.inside("tmp", "held", "srv", "ping"))
    site.assert_canary_intact()
