"""Reference plugin of the simulator's own tests: backs up and restores a directory
tree the way contract §6 and §7.4 recommend.  Stdlib only, module-level state
lives for one job.

Options (``k=v``, the first value of a key wins, like Bareos's base class):
``root=/dir`` (what to back up), ``io=plugin|core`` (classic plugin_io reads or
do_io_in_core), ``restore=extract|core`` (the plugin creates regular files and
applies attributes after the data, or everything goes to the core with CF_CORE).

Backup: bytes paths, post-order (children before their directory); names and
link targets decoded strictly as UTF-8, anything else skipped with an M_ERROR;
directories FT_DIREND with ``link`` = path + "/", regular files FT_REG,
symlinks FT_LNK, FIFOs/devices/sockets FT_SPEC with ``no_read``; integer times;
ACLs (POSIX ACL xattrs) in the ACL stream, other xattrs in the XATTR stream.
"""
import json
import os
import stat

import bareosfd

plugin = None

ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")


def _parse_options(text):
    """"k1=v1:k2=v2:" -> dict; a ``\\:`` stays inside the value."""
    options = {}
    parts = text.split(":")
    while parts:
        item = parts.pop(0)
        while item.endswith("\\") and parts:
            item = item[:-1] + ":" + parts.pop(0)
        if "=" in item:
            key, value = item.split("=", 1)
            options[key] = value
    return options


def _walk(root):
    """(path, lstat) of everything below ``root`` and ``root`` itself, post-order."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        entries = []
    for entry in sorted(entries, key=lambda e: e.name):
        st = os.lstat(entry.path)
        if stat.S_ISDIR(st.st_mode):
            for item in _walk(entry.path):
                yield item
        else:
            yield entry.path, st
    yield root, os.lstat(root)


class TreePlugin(object):
    def __init__(self):
        self.options = {}
        self.entries = None
        self.current = None
        self.fd = None
        self.fobj_path = None
        self.xattrs = None
        self.restored = {}
        self.acls = {}
        self.pending_xattrs = []
        self.directories = []

    def parse_plugin_definition(self, text):
        for key, value in _parse_options(text).items():
            self.options.setdefault(key, value)
        return bareosfd.bRC_OK

    # --- backup ---------------------------------------------------------------------

    def _next_entry(self):
        for path, st in self.entries:
            try:
                name = path.decode("utf-8")
                target = (os.readlink(path).decode("utf-8") if stat.S_ISLNK(st.st_mode)
                          else None)
            except UnicodeDecodeError:
                bareosfd.JobMessage(bareosfd.M_ERROR, "skipped %r: not a UTF-8 name or link "
                                                       "target\n" % path)
                continue
            return path, name, target, st
        return None

    def start_backup_file(self, savepkt):
        if self.entries is None:
            self.entries = _walk(self.options["root"].encode("utf-8"))
            self.current = self._next_entry()
        if self.current is None:
            return bareosfd.bRC_Stop
        path, name, target, st = self.current
        statp = bareosfd.StatPacket()
        statp.st_mode = st.st_mode
        statp.st_ino = st.st_ino
        statp.st_dev = st.st_dev & 0xFFFFFFFF
        statp.st_nlink = min(st.st_nlink, 0x7FFF)
        statp.st_uid = st.st_uid
        statp.st_gid = st.st_gid
        statp.st_rdev = st.st_rdev & 0xFFFFFFFF
        statp.st_size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        statp.st_atime = st.st_atime_ns // 10 ** 9
        statp.st_mtime = st.st_mtime_ns // 10 ** 9
        statp.st_ctime = st.st_ctime_ns // 10 ** 9
        statp.st_blksize = st.st_blksize
        statp.st_blocks = st.st_blocks
        savepkt.statp = statp
        savepkt.fname = name
        if stat.S_ISDIR(st.st_mode):
            savepkt.type = bareosfd.FT_DIREND
            savepkt.link = name + "/"
            savepkt.no_read = True
        elif stat.S_ISREG(st.st_mode):
            savepkt.type = bareosfd.FT_REG
        elif stat.S_ISLNK(st.st_mode):
            savepkt.type = bareosfd.FT_LNK
            savepkt.link = target
            savepkt.no_read = True
        else:
            savepkt.type = bareosfd.FT_SPEC
            savepkt.no_read = True
        self.xattrs = None
        return bareosfd.bRC_OK

    def end_backup_file(self):
        self.current = self._next_entry()
        return bareosfd.bRC_More if self.current is not None else bareosfd.bRC_OK

    def get_acl(self, acl):
        path = acl.fname.encode("utf-8")
        found = {}
        for name in ACL_NAMES:
            try:
                found[name] = os.getxattr(path, name, follow_symlinks=False).hex()
            except OSError:
                pass
        if found:
            acl.content = bytearray(json.dumps(found, sort_keys=True).encode("ascii"))
        return bareosfd.bRC_OK

    def get_xattr(self, xattr):
        path = xattr.fname.encode("utf-8")
        if self.xattrs is None:
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError:
                names = []
            self.xattrs = sorted(n for n in names if n not in ACL_NAMES)
        if not self.xattrs:
            return bareosfd.bRC_OK
        name = self.xattrs.pop(0)
        xattr.name = bytearray(name.encode("utf-8"))
        xattr.value = bytearray(os.getxattr(path, name, follow_symlinks=False))
        return bareosfd.bRC_More if self.xattrs else bareosfd.bRC_OK

    def check_file(self, fname):
        # Still there (e.g. skipped this time): not deleted.
        if os.path.lexists(fname.encode("utf-8")):
            return bareosfd.bRC_Seen
        return bareosfd.bRC_OK

    # --- I/O ------------------------------------------------------------------------------

    def plugin_io(self, iop):
        if iop.func == bareosfd.IO_OPEN:
            path = iop.fname.encode("utf-8")
            if iop.flags & (os.O_WRONLY | os.O_RDWR):
                parent = os.path.dirname(path)
                if not os.path.isdir(parent):
                    os.makedirs(parent)
                # never iop.mode: it is 0 under CF_CORE (§13)
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                                  0o600)
            else:
                self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            if self.options.get("io") == "core":
                iop.filedes = self.fd
                iop.status = bareosfd.iostat_do_in_core
            else:
                iop.status = bareosfd.iostat_do_in_plugin if hasattr(
                    bareosfd, "iostat_do_in_plugin") else 0
        elif iop.func == bareosfd.IO_READ:
            data = os.read(self.fd, iop.count)
            iop.buf = bytearray(data)
            iop.status = len(data)
        elif iop.func == bareosfd.IO_WRITE:
            view = memoryview(iop.buf)
            while view:
                view = view[os.write(self.fd, view):]
            iop.status = iop.count
        elif iop.func == bareosfd.IO_SEEK:
            os.lseek(self.fd, iop.offset, iop.whence)
            iop.status = 0
        elif iop.func == bareosfd.IO_CLOSE:
            os.close(self.fd)
            self.fd = None
        return bareosfd.bRC_OK

    # --- restore ----------------------------------------------------------------------

    def create_file(self, restorepkt):
        if self.options.get("restore") == "core":
            restorepkt.create_status = bareosfd.CF_CORE
            return bareosfd.bRC_OK
        path = restorepkt.ofname.encode("utf-8")
        mode = restorepkt.statp.st_mode
        if restorepkt.type == bareosfd.FT_REG:
            if chr(restorepkt.replace) == "n" and os.path.lexists(path):
                restorepkt.create_status = bareosfd.CF_SKIP
            else:
                restorepkt.create_status = bareosfd.CF_EXTRACT
        elif restorepkt.type == bareosfd.FT_SPEC and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            # the core does not create device nodes (§6)
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent)
            if os.path.lexists(path):
                os.unlink(path)
            os.mknod(path, mode, restorepkt.statp.st_rdev)
            restorepkt.create_status = bareosfd.CF_CREATED
        else:
            restorepkt.create_status = bareosfd.CF_CORE
        return bareosfd.bRC_OK

    def set_file_attributes(self, restorepkt):
        # Runs before IO_CLOSE: only remember, apply in end_restore_file (§6).
        if self.options.get("restore") != "core":
            statp = restorepkt.statp
            self.restored = {"path": restorepkt.ofname.encode("utf-8"),
                             "type": restorepkt.type, "uid": statp.st_uid,
                             "gid": statp.st_gid, "mode": statp.st_mode,
                             "times": (statp.st_atime, statp.st_mtime)}
        return bareosfd.bRC_OK

    def end_restore_file(self):
        attrs, self.restored = self.restored, {}
        acls, self.acls = self.acls, {}
        xattrs, self.pending_xattrs = self.pending_xattrs, []
        if not attrs or attrs["type"] == bareosfd.FT_LNKSAVED:
            return bareosfd.bRC_OK
        path = attrs["path"]
        if attrs["type"] != bareosfd.FT_DIREND:  # the core set owner and mode of directories
            os.chown(path, attrs["uid"], attrs["gid"], follow_symlinks=False)
            if not stat.S_ISLNK(attrs["mode"]):
                os.chmod(path, stat.S_IMODE(attrs["mode"]))
        for name, value in acls.items():  # after chmod, which rewrites the ACL mask
            os.setxattr(path, name, value, follow_symlinks=False)
        for name, value in xattrs:  # after chown, which drops security.capability
            os.setxattr(path, name, value, follow_symlinks=False)
        if attrs["type"] == bareosfd.FT_DIREND:
            self.directories.append((path, attrs["times"]))  # after their contents
        else:
            os.utime(path, attrs["times"], follow_symlinks=False)
        return bareosfd.bRC_OK

    def set_acl(self, acl):
        content = bytes(acl.content)[:-1]  # the FD appends one NUL (§3.5)
        self.acls = {name: bytes.fromhex(value)
                     for name, value in json.loads(content.decode("ascii")).items()}
        return bareosfd.bRC_OK

    def set_xattr(self, xattr):
        # Applied in end_restore_file, after the owner: a chown drops security.capability.
        value = bytes(xattr.value) if xattr.value is not None else b""
        if self.restored:
            self.pending_xattrs.append((bytes(xattr.name).decode("utf-8"), value))
        else:  # an entry whose attributes are not ours to apply (CF_CORE restores)
            os.setxattr(xattr.fname.encode("utf-8"), bytes(xattr.name).decode("utf-8"), value,
                        follow_symlinks=False)
        return bareosfd.bRC_OK

    def end_restore_job(self):
        for path, times in sorted(self.directories, key=lambda d: -d[0].count(b"/")):
            if os.path.isdir(path):
                os.utime(path, times)
        return bareosfd.bRC_OK


def load_bareos_plugin(plugindef):
    global plugin
    plugin = TreePlugin()
    bareosfd.RegisterEvents([bareosfd.bEventEndRestoreJob])
    return bareosfd.bRC_OK


def handle_plugin_event(event):
    if event == bareosfd.bEventEndRestoreJob:
        return plugin.end_restore_job()
    return bareosfd.bRC_OK


def start_restore_file(cmd):
    return bareosfd.bRC_OK


def _forward(name):
    def entry_point(*args):
        return getattr(plugin, name)(*args)
    entry_point.__name__ = name
    return entry_point


# The other entry points go straight to the job's TreePlugin.
for _name in ("parse_plugin_definition", "start_backup_file", "end_backup_file", "plugin_io",
              "get_acl", "get_xattr", "check_file", "create_file", "set_file_attributes",
              "end_restore_file", "set_acl", "set_xattr"):
    globals()[_name] = _forward(_name)
