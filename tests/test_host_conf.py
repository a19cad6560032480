"""ve.conf / vz.conf parsing: quoting, comments, $VEID, DISKSPACE and DISK= forms."""
import pytest

from vz7native.host import ConfigError
from vz7native.host import conf

CTID = "2d109ae4-5231-475f-bc44-5cabf5d8503b"

# A container's ve.conf as vzctl 7 leaves it: a sample's comment header, KEY="value"
# lines, blank lines, values that vzctl added later at the end.
VE_CONF = b"""# Configuration file for a 1024 MB container, from the vswap sample.
#
# Lines like this one are comments.

VERSION="2"

ONBOOT="yes"

PHYSPAGES="262144:262144"
SWAPPAGES="262144"

NETFILTER="full"

CPUUNITS="1000"

DISKSPACE="10485760:10485760"
DISKINODES="655360:655360"
QUOTATIME="0"
IP_ADDRESS="0.0.0.0"
PLATFORM="linux"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
VE_TYPE="regular"
OSTEMPLATE=".centos-7-x86_64"
TEMPLATES="mod_ssl-centos-7-x86_64 "
ORIGIN_SAMPLE="vswap.1024MB"
HOSTNAME="web01.example.com"
NAME="web01"
DESCRIPTION="shop \\"front\\" end"
NAMESERVER="10.0.0.2 10.0.0.3"
VEID="2d109ae4-5231-475f-bc44-5cabf5d8503b"
"""


def parse(text):
    return conf.parse_conf(text, b"/etc/vz/conf/x.conf")


def test_a_real_ve_conf():
    values = parse(VE_CONF)
    assert values["NAME"] == b"web01"
    assert values["DISKSPACE"] == b"10485760:10485760"
    assert values["VE_ROOT"] == b"/vz/root/$VEID"
    assert values["TEMPLATES"] == b"mod_ssl-centos-7-x86_64 "
    assert values["DESCRIPTION"] == b'shop "front" end'
    assert values["NAMESERVER"] == b"10.0.0.2 10.0.0.3"
    assert values["VEID"] == CTID.encode()
    assert list(values)[:3] == ["VERSION", "ONBOOT", "PHYSPAGES"]


def test_vz_conf_style_unquoted_values_and_comments():
    # /etc/vz/vz.conf writes many values without quotes, and has trailing comments.
    values = parse(b"## Global parameters\nVIRTUOZZO=yes\nLOCKDIR=/vz/lock\n"
                   b"VE_ROOT=/vz/root/$VEID   # where containers are mounted\n"
                   b"  DUMPDIR=/vz/dump\n\t# indented comment\nEMPTY=\nQUOTED_EMPTY=\"\"\n")
    assert values == {"VIRTUOZZO": b"yes", "LOCKDIR": b"/vz/lock", "VE_ROOT": b"/vz/root/$VEID",
                      "DUMPDIR": b"/vz/dump", "EMPTY": b"", "QUOTED_EMPTY": b""}


@pytest.mark.parametrize("line,value", [
    (b"A='single $VEID \"kept\"'", b'single $VEID "kept"'),
    (b'A="a # not a comment"', b"a # not a comment"),
    (b'A="x"  # a comment after blanks', b"x"),
    (b'A="x"#y', b"x#y"),                   # ...but not right after the value
    (b"A=x#y", b"x#y"),                    # '#' inside a word is not a comment
    (b'A="back\\\\slash \\$HOME \\n"', b"back\\slash $HOME \\n"),
    (b"A=one\\ word", b"one word"),
    (b"A=\"con\"'cat'enated", b"concatenated"),
    (b'A="caf\xe9"', b"caf\xe9"),           # bytes stay bytes
    (b'A="v"\r', b"v"),                     # CRLF files
])
def test_quoting(line, value):
    assert parse(line)["A"] == value


def test_a_later_assignment_wins():
    assert parse(b'NAME="old"\nNAME="new"\n')["NAME"] == b"new"


@pytest.mark.parametrize("text,message", [
    (b'A="open', "3: unterminated double quote"),
    (b"A='open", "3: unterminated single quote"),
    (b'A="v" trailing', "3: unexpected text after the value: trailing"),
    (b"export A=1", "3: not a KEY=value assignment: export A=1"),
    (b"A = 1", "3: not a KEY=value assignment"),
    (b"1A=1", "3: not a KEY=value assignment"),
    (b"A=v\\", "3: continuation lines are not supported"),
])
def test_bad_lines_name_the_file_and_line(text, message):
    with pytest.raises(ConfigError) as e:
        parse(b"# ok\nOK=1\n" + text + b"\n")
    assert str(e.value).startswith("/etc/vz/conf/x.conf:")
    assert message in str(e.value)


def test_veid_references():
    assert conf.substitute_veid(b"/vz/root/$VEID", "101") == b"/vz/root/101"
    assert conf.substitute_veid(b"/vz/${VEID}/x/$VEID", CTID) == b"/vz/%s/x/%s" % (
        CTID.encode(), CTID.encode())
    assert conf.substitute_veid(b"/vz/private/$VEIDX", "7") == b"/vz/private/7X"
    assert conf.substitute_veid(b"/vz/private/101", "7") == b"/vz/private/101"


@pytest.mark.parametrize("value,expected", [
    (b"10485760:10485760", (10 << 30, 10 << 30)),   # KiB, as vzctl writes it
    (b"1048576", (1 << 30, 1 << 30)),               # one number: soft = hard
    (b"10G:11G", (10 << 30, 11 << 30)),
    (b"512m:1.5g", (512 << 20, 3 << 29)),
    (b"2048K:4096B", (2 << 20, 4 << 10)),
    (b"1T:unlimited", (1 << 40, None)),
    (b"unlimited", (None, None)),
])
def test_diskspace(value, expected):
    assert conf.parse_diskspace(value, "") == expected


@pytest.mark.parametrize("value", [b"", b"ten", b"10X", b"10:", b"1:2:3", b"-5"])
def test_bad_diskspace(value):
    with pytest.raises(ConfigError):
        conf.parse_diskspace(value, "DISKSPACE: ")


def test_disk_entries_as_vzctl_writes_them():
    # disk2str: uuid, size, enabled, mnt, ..., image= relative to VE_PRIVATE; ';' between disks.
    disks = conf.parse_disks(
        b"uuid={a1b2c3d4-0000-4000-8000-000000000001},size=10485760,enabled=yes,mnt=/,"
        b"image=root.hdd;uuid=A1B2C3D4-0000-4000-8000-000000000002,size=1048576,enabled=no,"
        b"mnt=/home,mnt_opts=noatime,autocompact=off,image=/vz/disks/home.hdd;"
        b"uuid={a1b2c3d4-0000-4000-8000-000000000003},device=/dev/sdb1,mnt=/data,"
        b"storage_url=x,unknown=skipped;", "")
    assert disks == [
        conf.DiskEntry("{a1b2c3d4-0000-4000-8000-000000000001}", True, 10485760, b"/",
                       b"root.hdd", None),
        conf.DiskEntry("{a1b2c3d4-0000-4000-8000-000000000002}", False, 1048576, b"/home",
                       b"/vz/disks/home.hdd", None),
        conf.DiskEntry("{a1b2c3d4-0000-4000-8000-000000000003}", True, None, b"/data",
                       None, b"/dev/sdb1"),
    ]
    assert conf.parse_disks(b"", "") == []


@pytest.mark.parametrize("value,message", [
    (b"size=1,image=root.hdd", "no valid uuid="),
    (b"uuid={zz},image=root.hdd", "no valid uuid="),
    (b"uuid={a1b2c3d4-0000-4000-8000-000000000001},mnt=/", "exactly one of image= or device="),
    (b"uuid={a1b2c3d4-0000-4000-8000-000000000001},image=a,device=/dev/b",
     "exactly one of image= or device="),
    (b"uuid={a1b2c3d4-0000-4000-8000-000000000001},image=a,enabled=maybe", "expected yes or no"),
    (b"uuid={a1b2c3d4-0000-4000-8000-000000000001},image=a,size=10G", "size= is not a number"),
])
def test_bad_disk_entries(value, message):
    with pytest.raises(ConfigError) as e:
        conf.parse_disks(value, "ve.conf: DISK: ")
    assert message in str(e.value) and "ve.conf: DISK: " in str(e.value)


@pytest.mark.parametrize("text,uuid,ctid", [
    ("2d109ae4-5231-475f-bc44-5cabf5d8503b", CTID, CTID),
    ("{2D109AE4-5231-475F-BC44-5CABF5D8503B}", CTID, CTID),
    ("2d109ae45231475fbc445cabf5d8503b", CTID, CTID),
    (b"{2d109ae4-5231-475f-bc44-5cabf5d8503b}", CTID, CTID),
    ("101", None, "101"),
    ("0101", None, "101"),
    ("web01", None, None),
    ("2d109ae4-5231-475f-bc44", None, None),
    ("\u0661\u0660\u0661", None, None),     # digits, but not ASCII ones
])
def test_uuid_and_ctid_forms(text, uuid, ctid):
    assert conf.normalize_uuid(text) == uuid
    assert conf.parse_ctid(text) == ctid
