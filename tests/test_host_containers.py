"""Containers from /etc/vz/conf and the private areas: inventory, lookups, layouts."""
import os
import subprocess
import sys

import pytest

from host_helpers import DB, WEB, two_container_host
from vz7native.host import (
    ConfigError, ContainerMismatch, ContainerNotFound, Host, HostError, UnsupportedLayout)


@pytest.fixture
def sandbox(tmp_path):
    return two_container_host(tmp_path, db_name="db 01 \u00e9")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_inventory_reads_every_container(sandbox):
    cts, problems = sandbox.host.containers()
    assert problems == []
    assert [(ct.ctid, ct.uuid, ct.name) for ct in cts] == [
        (WEB, WEB, "web01"), (DB, DB, "db 01 \u00e9")]
    web = cts[0]
    assert web.conf == b"/etc/vz/conf/%s.conf" % WEB.encode()
    assert web.ve_private == b"/vz/private/" + WEB.encode()
    assert web.ve_root == b"/vz/root/" + WEB.encode()
    assert web.private == sandbox.root + b"/vz/private/" + WEB.encode()
    assert web.root == sandbox.root + b"/vz/root/" + WEB.encode()
    assert web.layout == "ploop" and web.layout_version == 5
    assert web.diskspace == (128 << 20, 128 << 20)
    assert [(d.mnt, d.image, d.size_kib) for d in web.disks] == [(b"/", b"root.hdd", 128 << 10)]
    assert web.config["OSTEMPLATE"] == b".centos-7-x86_64"
    assert web.config["LOCKDIR"] == b"/vz/lock"          # a default from vz.conf
    assert web.label == "'web01' (%s)" % WEB


def test_files_that_are_not_container_configs_are_ignored(sandbox):
    conf_dir = sandbox.host.real(b"/etc/vz/conf")
    for name in (b"ve-basic.conf-sample", b"0.conf", b"web01.conf", b"%s.conf.lck" % WEB.encode(),
                 b"networks_classes"):
        write(os.path.join(conf_dir, name), b'NAME="decoy"\n')
    cts, problems = sandbox.host.containers()
    assert [ct.ctid for ct in cts] == [WEB, DB] and problems == []


@pytest.mark.parametrize("uuid", [WEB, WEB.upper(), "{%s}" % WEB, WEB.replace("-", "")])
def test_find_by_uuid_in_any_form(sandbox, uuid):
    assert sandbox.host.find(uuid=uuid).ctid == WEB


def test_find_by_name_and_by_both(sandbox):
    assert sandbox.host.find(name="db 01 \u00e9").ctid == DB
    assert sandbox.host.find(name="web01", uuid="{%s}" % WEB).ctid == WEB


def test_a_name_and_a_uuid_of_different_containers(sandbox):
    with pytest.raises(ContainerMismatch) as e:
        sandbox.host.find(name="web01", uuid=DB)
    message = str(e.value)
    assert "name 'web01' is container %s" % WEB in message
    assert "uuid %s is container 'db 01 \u00e9'" % DB in message


def test_a_name_with_an_unknown_uuid_is_a_mismatch(sandbox):
    other = "11111111-2222-4333-8444-555555555555"
    with pytest.raises(ContainerMismatch) as e:
        sandbox.host.find(name="web01", uuid=other)
    assert "no container has uuid %s" % other in str(e.value)
    with pytest.raises(ContainerMismatch) as e:
        sandbox.host.find(name="nope", uuid=WEB)
    assert "no container is called 'nope'" in str(e.value)


def test_not_found_names_what_was_asked_and_what_could_not_be_read(sandbox):
    write(sandbox.host.real(b"/vz/private/%s/ve.conf" % DB.encode()), b'NAME="db\n')
    with pytest.raises(ContainerNotFound) as e:
        sandbox.host.find(name="mail01")
    message = str(e.value)
    assert "no container with name 'mail01'" in message
    assert "(1 containers in /etc/vz/conf)" in message
    assert "could not read /etc/vz/conf/%s.conf" % DB in message
    assert "unterminated double quote" in message
    with pytest.raises(ContainerNotFound, match="is not a UUID"):
        sandbox.host.find(uuid="web01")
    with pytest.raises(ValueError):
        sandbox.host.find()


def test_the_same_name_twice(sandbox):
    sandbox.write_container("7e57ab1e-0000-4000-8000-000000000001", "web01")
    with pytest.raises(ContainerMismatch, match="name 'web01' is used by 2 containers"):
        sandbox.host.find(name="web01")


def test_a_legacy_numeric_container(sandbox):
    # vzctl's compatibility schema: CTID 101, UUID= in ve.conf, paths from vz.conf.
    write(sandbox.host.real(b"/vz/private/101/ve.conf"),
          b'NAME="legacy"\nUUID="{7E57AB1E-0000-4000-8000-000000000101}"\nVEID="101"\n')
    os.symlink(b"5", sandbox.host.real(b"/vz/private/101/.ve.layout"))
    os.symlink(b"/vz/private/101/ve.conf", sandbox.host.real(b"/etc/vz/conf/101.conf"))
    ct = sandbox.host.find(name="legacy")
    assert (ct.ctid, ct.uuid) == ("101", "7e57ab1e-0000-4000-8000-000000000101")
    assert ct.ve_root == b"/vz/root/101" and ct.ve_private == b"/vz/private/101"
    assert sandbox.host.find(uuid="7e57ab1e-0000-4000-8000-000000000101") is not None


def test_a_legacy_container_without_uuid_has_none(sandbox):
    write(sandbox.host.real(b"/vz/private/102/ve.conf"),
          b'VE_ROOT="/vz/root/102"\nVE_PRIVATE="/vz/private/102"\n')
    os.symlink(b"/vz/private/102/ve.conf", sandbox.host.real(b"/etc/vz/conf/102.conf"))
    ct = sandbox.host.load("102")
    assert ct.uuid is None and ct.name is None and ct.label == "102"
    assert sandbox.host.container_lock_path(ct) == b"/var/lock/vz7native/ct-102.lock"


def test_the_config_link_is_followed_inside_the_host_root(sandbox, tmp_path):
    # An absolute link means this host's /vz; a link climbing with .. stays inside.
    ctid = "7e57ab1e-0000-4000-8000-000000000003"
    sandbox.write_container(ctid, "moved")
    link = sandbox.host.real(b"/etc/vz/conf/%s.conf" % ctid.encode())
    os.unlink(link)
    os.symlink(b"../../../../../../../../vz/private/%s/ve.conf" % ctid.encode(), link)
    assert sandbox.host.load(ctid).name == "moved"
    os.unlink(link)
    outside = tmp_path / "outside.conf"
    outside.write_bytes(b'NAME="escaped"\n')
    os.symlink(os.fsencode(str(outside)), link)   # names a file of the real root
    with pytest.raises(ConfigError, match="cannot read /etc/vz/conf/%s.conf" % ctid):
        sandbox.host.load(ctid)


def test_missing_paths_and_private_areas(sandbox):
    ctid = "7e57ab1e-0000-4000-8000-000000000004"
    write(sandbox.host.real(b"/vz/private/%s/ve.conf" % ctid.encode()), b'NAME="x"\n')
    os.symlink(b"/vz/private/%s/ve.conf" % ctid.encode(),
               sandbox.host.real(b"/etc/vz/conf/%s.conf" % ctid.encode()))
    os.unlink(sandbox.host.real(b"/etc/vz/vz.conf"))   # no defaults any more
    with pytest.raises(ConfigError, match="VE_PRIVATE is not set .neither there nor in /etc/vz/vz.conf"):
        sandbox.host.load(ctid)
    write(sandbox.host.real(b"/vz/private/%s/ve.conf" % ctid.encode()),
          b'VE_PRIVATE="/vz/private/gone"\nVE_ROOT="/vz/root/$VEID"\n')
    with pytest.raises(HostError, match="private area /vz/private/gone does not exist"):
        sandbox.host.load(ctid)
    write(sandbox.host.real(b"/vz/private/%s/ve.conf" % ctid.encode()),
          b'VE_PRIVATE="vz/private/$VEID"\nVE_ROOT="/vz/root/$VEID"\n')
    with pytest.raises(ConfigError, match="VE_PRIVATE=vz/private/%s is not an absolute path" % ctid):
        sandbox.host.load(ctid)


def test_the_root_disk_descriptor(sandbox):
    web = sandbox.host.find(name="web01")
    with pytest.raises(HostError, match="has no DiskDescriptor.xml .looked for /vz/private/%s/root.hdd/"
                       % WEB):
        web.disk_descriptor
    write(os.path.join(web.private, b"root.hdd/DiskDescriptor.xml"), b"<Parallels_disk_image/>")
    assert web.disk_descriptor == web.private + b"/root.hdd/DiskDescriptor.xml"
    with pytest.raises(HostError) as e:
        web.disk_size
    assert str(e.value) == "container 'web01' (%s): %s: <Disk_Parameters> is missing" % (
        WEB, os.fsdecode(web.disk_descriptor))


@pytest.mark.parametrize("extra,found", [
    (b'DISK="uuid={a1b2c3d4-0000-4000-8000-000000000002},size=1048576,enabled=yes,mnt=/home,'
     b'image=disk-home.hdd"\n',
     "a disk root.hdd mounted at /, a disk disk-home.hdd mounted at /home"),
    (b'DISK="uuid={a1b2c3d4-0000-4000-8000-000000000001},mnt=/,image=root.hdd;'
     b'uuid={a1b2c3d4-0000-4000-8000-000000000002},device=/dev/sdb1,mnt=/data"\n',
     "a disk root.hdd mounted at /, a disk device /dev/sdb1 mounted at /data"),
    (b'ROOT_DISK="no"\n', "no enabled disk"),
    (b'DISK="uuid={a1b2c3d4-0000-4000-8000-000000000002},mnt=/srv,image=srv.hdd"\nROOT_DISK=no\n',
     "a disk srv.hdd mounted at /srv"),
])
def test_several_disks_are_refused_with_what_was_found(sandbox, extra, found):
    ctid = "7e57ab1e-0000-4000-8000-000000000005"
    sandbox.write_container(ctid, "disks", extra_config=extra)
    ct = sandbox.host.find(name="disks")
    with pytest.raises(UnsupportedLayout) as e:
        ct.disk_descriptor
    assert str(e.value) == ("container 'disks' (%s) has %s; only a single ploop root disk "
                            "is supported" % (ctid, found))


def test_a_disabled_second_disk_is_not_in_use(sandbox):
    ctid = "7e57ab1e-0000-4000-8000-000000000006"
    sandbox.write_container(ctid, "one-disk", extra_config=(
        b'DISK="uuid={a1b2c3d4-0000-4000-8000-000000000001},size=131072,enabled=yes,mnt=/,'
        b'image=/vz/private/%s/root.hdd;uuid={a1b2c3d4-0000-4000-8000-000000000002},'
        b'enabled=no,mnt=/home,image=home.hdd"\n' % ctid.encode()))
    ct = sandbox.host.find(name="one-disk")
    assert [d.mnt for d in ct.disks] == [b"/"]
    write(os.path.join(ct.private, b"root.hdd/DiskDescriptor.xml"), b"<x/>")
    assert ct.disk_descriptor == ct.private + b"/root.hdd/DiskDescriptor.xml"


@pytest.mark.parametrize("layout,text", [(b"4", "layout 4"), (None, "layout 0")])
def test_simfs_is_refused(sandbox, layout, text):
    ct = sandbox.host.find(name="web01")
    link = os.path.join(ct.private, b".ve.layout")
    os.unlink(link)
    if layout is not None:
        os.symlink(layout, link)
    ct = sandbox.host.find(name="web01")
    assert ct.layout == "simfs"
    with pytest.raises(UnsupportedLayout) as e:
        ct.disk_size
    assert str(e.value) == ("container 'web01' (%s) uses the simfs layout (/vz/private/%s/"
                            ".ve.layout gives %s); only ploop containers (layout 5) are supported"
                            % (WEB, WEB, text))


def test_host_paths(tmp_path):
    host = Host(str(tmp_path))
    assert host.real(b"/etc/vz/../vz/vz.conf") == os.fsencode(str(tmp_path)) + b"/etc/vz/vz.conf"
    assert host.view(host.real(b"/vz/lock")) == b"/vz/lock"
    assert Host().real(b"/etc") == b"/etc" and Host().view(b"/etc") == b"/etc"
    with pytest.raises(ValueError):
        host.real(b"relative")


def test_a_config_that_is_not_a_file(sandbox):
    # A FIFO where ve.conf should be is refused at once, not read (and waited on).
    path = sandbox.host.real(b"/vz/private/%s/ve.conf" % WEB.encode())
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="cannot read /etc/vz/conf/%s.conf: not a regular file" % WEB):
        sandbox.host.load(WEB)


def test_importing_the_host_room_loads_no_ctypes():
    # The plugin imports it in every Bareos job: ctypes (or uuid on 3.6) costs ~190 KB each.
    code = ("import sys, vz7native.host; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('ctypes', 'uuid', 'pyudev', 'fuse', 'mfusepy')))")
    out = subprocess.check_output([sys.executable, "-c", code], universal_newlines=True)
    assert out.strip() == "[]"
