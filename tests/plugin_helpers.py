"""What the plugin tests share: the entry module's Plugin= line, what a backup
stored (read back from the simulator's volume), the tree a container holds, and
changes written into a container's image without the ploop driver."""
import hashlib
import json
import os
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_DIR = os.path.join(os.path.dirname(HERE), "src", "plugin")
sys.path.insert(0, PLUGIN_DIR)

from fdsim import constants as C  # noqa: E402
from fdsim import volume  # noqa: E402
from fdsim.testing import make_director, plugin_line  # noqa: E402
from vz7bareos import attrs, names  # noqa: E402
from vz7native import image  # noqa: E402
from vz7native.walk import walk  # noqa: E402

MODULE = "bareos-fd-vz7_ct_fs"
SEED_FILESET_OPTIONS = {"blocker": "tmp/backup_blocker", "lockfile": "/tmp/bareos_backup_cts"}
# What ext4 adds to every filesystem: not part of a container's tree.
NOT_IN_TREE = (b"lost+found",)


def line(sandbox, **options):
    """The seed's FileSet Plugin= line, pointed at ``sandbox``."""
    merged = dict(SEED_FILESET_OPTIONS, host_root=os.fsdecode(sandbox.root))
    merged.update(options)
    return plugin_line(MODULE, PLUGIN_DIR, **{k: v for k, v in merged.items() if v is not None})


def job_options(ct, **extra):
    """The seed's Job FdPluginOptions for ``ct``."""
    text = "python3:name=%s:uuid=%s" % (ct.name, ct.uuid)
    for key, value in extra.items():
        text += ":%s=%s" % (key, value)
    return [text]


def director(workdir, version=23, **kwargs):
    return make_director(str(workdir), bareos_version=version, isolation="process", **kwargs)


def fs_name(ct, relpath, mount_base=b"/mnt/bareos"):
    """The catalog name of ``relpath`` inside ``ct``'s filesystem."""
    path = os.path.join(mount_base, ct.uuid.encode("ascii"))
    if relpath:
        path = os.path.join(path, relpath)
    return names.encode_path(path)


class Stored(object):
    """One file as a backup job stored it."""

    def __init__(self, attributes):
        self.attributes = attributes
        self.fname = attributes["fname"]
        self.type = attributes["type"]
        self.link = attributes["link"]
        self.stat = attributes["stat"]
        self.data = b""
        self.acl = None
        self.xattrs = {}

    @property
    def exact(self):
        return attrs.Attrs.decode(self.xattrs[attrs.ATTRS_NAME.encode("ascii")])

    def __repr__(self):
        return "<Stored %s type %d>" % (self.fname, self.type)


def stored(workdir, jobid):
    """({catalog name: Stored}, [restore objects]) of one job, read from its volume."""
    files, objects, current = {}, [], None
    for record in volume.read_records(volume.volume_path(str(workdir), jobid)):
        if record.stream == C.STREAM_UNIX_ATTRIBUTES:
            current = Stored(record.attributes())
            files[current.fname] = current
        elif record.stream == C.STREAM_RESTORE_OBJECT:
            objects.append(record.attributes())
        elif record.stream == C.STREAM_FILE_DATA:
            current.data += record.payload
        elif record.stream == C.STREAM_SPARSE_DATA:
            offset, data = record.sparse()
            current.data = current.data.ljust(offset, b"\0") + data
        elif record.stream == C.STREAM_ACL_PLUGIN:
            current.acl = attrs.decode_acls(record.payload)
        elif record.stream == C.STREAM_XATTR_PLUGIN:
            current.xattrs.update(record.xattrs())
    return files, objects


def records(objects):
    """The container records among a job's restore objects: {uuid: record}."""
    found = {}
    for obj in objects:
        if obj["object_name"].startswith("vz7native-ct:"):
            record = json.loads(bytes.fromhex(obj["object"]).decode("utf-8"))
            found[record["uuid"]] = record
    return found


def tree_picture(top, skip=NOT_IN_TREE):
    """{relpath: facts} of the tree at ``top``: what a backup must keep of each entry."""
    picture = {}
    for entry in walk(top, sort=True):
        rel = entry.relpath
        if rel.split(b"/")[0] in skip:
            continue
        st = entry.stat
        facts = {"type": entry.type, "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                 "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink, "ino": st.st_ino}
        if entry.type == "file":
            with open(entry.path, "rb") as f:
                facts["sha"] = hashlib.sha256(f.read()).hexdigest()
            facts["size"] = st.st_size
        elif entry.type == "symlink":
            facts["target"] = os.readlink(entry.path)
        elif entry.type in ("chardev", "blockdev"):
            facts["rdev"] = st.st_rdev
        if entry.type != "symlink":
            listed = os.listxattr(entry.path, follow_symlinks=False)
            facts["xattrs"] = {os.fsencode(n): os.getxattr(entry.path, n, follow_symlinks=False)
                               for n in listed}
        picture[rel] = facts
    return picture


def is_dir_type(kind):
    return kind == C.FT["FT_DIREND"]


def mode_type(mode):
    return stat.S_IFMT(mode)
