"""VZ7 configuration files: ``/etc/vz/vz.conf`` and a container's ``ve.conf``.

Both are lists of shell-style ``KEY="value"`` assignments, as libvzctl writes them
(``vzctl2_conf_save`` writes ``KEY="value"`` lines and keeps comments and other
lines as they were). libvzctl reads them line by line (``parse_line``): blank lines
and lines starting with ``#`` are skipped, the key is what stands before ``=``, one
pair of surrounding quotes is removed, and a ``#`` that starts a word outside quotes
starts a comment. The action scripts ``source`` the same files, so values are read
here with the shell's quoting rules, which agree with libvzctl on everything vzctl
writes:

* ``"..."``: double quotes; a backslash escapes only ``"`` ``\\`` ``$`` and a backtick;
* ``'...'``: single quotes, taken literally;
* outside quotes a backslash escapes any character and a blank ends the value;
* after the value only a comment may follow.

A line that is none of these (no ``=``, an unterminated quote, text after the
value) is refused with the file name and line number rather than guessed at.

``$VEID`` and ``${VEID}`` in ``VE_ROOT`` and ``VE_PRIVATE`` stand for the container
ID (libvzctl's ``subst_VEID``); nothing else is expanded, as in libvzctl.

Values are bytes (paths stay bytes inside the library); keys are ``str``.
"""
import collections
import os
import re

from vz7native.host.errors import ConfigError
from vz7native.paths import show

_KEY = re.compile(br"[A-Za-z_][A-Za-z0-9_]*")
_DQ_ESCAPABLE = (b'"', b"\\", b"$", b"`")
_UUID = re.compile(r"^\{?([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?"
                   r"([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})\}?$")
_DECIMAL = re.compile(r"^[0-9]+$")
_VEID_REFS = (b"${VEID}", b"$VEID")

# Parameters of vz.conf that are never defaults for a container (libvzctl's
# local_param_filter): each container has its own.
LOCAL_PARAMS = ("NETFILTER", "VEID", "UUID")

# DISKSPACE suffixes (libvzctl get_mul); "P" is a page.
_SIZE_UNITS = {b"B": 1, b"K": 1 << 10, b"M": 1 << 20, b"G": 1 << 30, b"T": 1 << 40,
               b"P": os.sysconf("SC_PAGE_SIZE")}
_SIZE = re.compile(br"^([0-9]+(?:\.[0-9]*)?)([A-Za-z]?)$")

DiskEntry = collections.namedtuple("DiskEntry", "uuid enabled size_kib mnt image device")
DiskEntry.__doc__ = """One entry of ``DISK=``: ``image`` (a ploop image directory,
relative to VE_PRIVATE or absolute) or ``device`` (a block device) is set, never both.
``enabled`` is False only for ``enabled=no``; ``size_kib`` is None when not given."""


def normalize_uuid(text):
    """``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (lower case) for a UUID given with or
    without braces or dashes, as libvzctl normalises them; None if it is not one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    match = _UUID.match(text.strip())
    return "-".join(match.groups()).lower() if match else None


def parse_ctid(text):
    """The container ID in libvzctl's normal form: a UUID, or a decimal legacy VEID.

    Returns None for anything else (``vzctl2_parse_ctid``)."""
    uuid = normalize_uuid(text)
    if uuid is not None:
        return uuid
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return str(int(text)) if _DECIMAL.match(text) else None


def parse_conf(data, source):
    """The assignments of a configuration file, in file order (a later one wins).

    ``data`` is the file's bytes, ``source`` names it in errors."""
    values = collections.OrderedDict()
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.rstrip(b"\r").strip(b" \t")
        if not line or line.startswith(b"#"):
            continue
        where = "%s:%d: " % (show(source), number)
        match = _KEY.match(line)
        if match is None or line[match.end():match.end() + 1] != b"=":
            raise ConfigError(where + "not a KEY=value assignment: %s" % show(line))
        values[match.group().decode("ascii")] = _value(line, match.end() + 1, where)
    return values


def _value(line, pos, where):
    out = bytearray()
    end = len(line)
    while pos < end:
        char = line[pos:pos + 1]
        if char in (b" ", b"\t"):
            break
        if char == b"'":
            close = line.find(b"'", pos + 1)
            if close < 0:
                raise ConfigError(where + "unterminated single quote")
            out += line[pos + 1:close]
            pos = close + 1
        elif char == b'"':
            pos += 1
            while True:
                if pos >= end:
                    raise ConfigError(where + "unterminated double quote")
                char = line[pos:pos + 1]
                if char == b'"':
                    pos += 1
                    break
                if char == b"\\" and line[pos + 1:pos + 2] in _DQ_ESCAPABLE:
                    pos += 1
                    char = line[pos:pos + 1]
                out += char
                pos += 1
        elif char == b"\\":
            if pos + 1 >= end:
                raise ConfigError(where + "continuation lines are not supported")
            out += line[pos + 1:pos + 2]
            pos += 2
        else:
            out += char
            pos += 1
    rest = line[pos:].strip(b" \t")
    if rest and not rest.startswith(b"#"):
        raise ConfigError(where + "unexpected text after the value: %s" % show(rest))
    return bytes(out)


def read_conf(path, shown=None):
    """Parse the file at ``path`` (real path); ``shown`` names it in errors."""
    shown = path if shown is None else shown
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (show(shown), e.strerror))
    return parse_conf(data, shown)


def substitute_veid(value, ctid):
    """``value`` with ``$VEID`` / ``${VEID}`` replaced by the container ID."""
    ctid = ctid.encode("ascii")
    for ref in _VEID_REFS:
        value = value.replace(ref, ctid)
    return value


def parse_size_kib(text, where):
    """One DISKSPACE number in KiB: plain KiB, or a number with a B/K/M/G/T/P suffix
    (fractions allowed, as libvzctl's ``parse_ul_sfx``). None for ``unlimited``."""
    if text == b"unlimited":
        return None
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else b""
    if match is None or (unit and unit not in _SIZE_UNITS):
        raise ConfigError(where + "not a size: %s" % show(text))
    number = float(match.group(1)) if b"." in match.group(1) else int(match.group(1))
    if not unit:
        return int(number)
    return int(number * _SIZE_UNITS[unit] // 1024)


def parse_diskspace(value, where):
    """``DISKSPACE="soft[:hard]"`` as (soft, hard) in bytes, None for unlimited; a
    single number sets both, as in libvzctl."""
    soft, sep, hard = value.partition(b":")
    soft_kib = parse_size_kib(soft, where)
    hard_kib = parse_size_kib(hard, where) if sep else soft_kib
    return tuple(None if kib is None else kib * 1024 for kib in (soft_kib, hard_kib))


def parse_yes_no(value, where):
    if value.lower() in (b"yes", b"on"):
        return True
    if value.lower() in (b"no", b"off"):
        return False
    raise ConfigError(where + "expected yes or no, not %s" % show(value))


def parse_disks(value, where):
    """The entries of ``DISK=``: ``;`` between disks, ``,`` between ``key=value``
    fields (``uuid``, ``enabled``, ``size`` in KiB, ``mnt``, ``image`` or ``device``;
    others are skipped, as libvzctl does). Each disk needs a uuid and a path."""
    disks = []
    for spec in value.split(b";"):
        if not spec.strip():
            continue
        fields = {}
        for item in spec.split(b","):
            key, sep, val = item.partition(b"=")
            if sep and val:
                fields[key.strip()] = val
        label = where + "disk %s: " % show(spec)
        uuid = normalize_uuid(fields.get(b"uuid", b""))
        if uuid is None:
            raise ConfigError(label + "no valid uuid=")
        if (b"image" in fields) == (b"device" in fields):
            raise ConfigError(label + "needs exactly one of image= or device=")
        size = fields.get(b"size")
        if size is not None and not size.isdigit():
            raise ConfigError(label + "size= is not a number of KiB")
        disks.append(DiskEntry(
            uuid="{%s}" % uuid,
            enabled=parse_yes_no(fields[b"enabled"], label) if b"enabled" in fields else True,
            size_kib=int(size) if size is not None else None,
            mnt=fields.get(b"mnt"),
            image=fields.get(b"image"),
            device=fields.get(b"device")))
    return disks
