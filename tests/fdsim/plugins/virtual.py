"""Building block for small test plugins: virtual regular files, all entry
points implemented with plain defaults.  A test plugin subclasses
:class:`VirtualPlugin`, overrides what it tests and calls
``entry_points(globals(), TheClass)``.

Options: ``files=/a,/b`` (names; content is the name repeated ``size`` times),
``size=N`` (default 3), ``acl=TEXT`` and ``xattr=NAME=VALUE`` (every file gets
that ACL content and that one xattr; default: none).
"""
import os

import bareosfd


def parse(plugindef):
    options = {}
    for item in plugindef.split(":"):
        if "=" in item:
            key, value = item.split("=", 1)
            options.setdefault(key, value)
    return options


class VirtualPlugin(object):
    mtime = 1500000000

    def __init__(self, plugindef):
        self.options = parse(plugindef)
        self.pending = None
        self.current = None
        self.fd = None
        self.data = b""
        self.position = 0

    # backup
    def parse_plugin_definition(self, plugindef):
        for key, value in parse(plugindef).items():
            self.options.setdefault(key, value)
        return bareosfd.bRC_OK

    def handle_plugin_event(self, event):
        return bareosfd.bRC_OK

    def names(self):
        return self.options.get("files", "/virtual/file1").split(",")

    def content(self, name):
        return name.encode("utf-8") * int(self.options.get("size", "3"))

    def fill(self, savepkt, name):
        statp = bareosfd.StatPacket()
        statp.st_mode = 0o100644
        statp.st_size = len(self.content(name))
        statp.st_mtime = statp.st_ctime = statp.st_atime = self.mtime
        savepkt.statp = statp
        savepkt.fname = name
        savepkt.type = bareosfd.FT_REG

    def start_backup_file(self, savepkt):
        if self.pending is None:
            self.pending = list(self.names())
        if not self.pending:
            return bareosfd.bRC_Stop
        self.current = self.pending.pop(0)
        self.fill(savepkt, self.current)
        return bareosfd.bRC_OK

    def end_backup_file(self):
        return bareosfd.bRC_More if self.pending else bareosfd.bRC_OK

    def plugin_io(self, iop):
        if iop.func == bareosfd.IO_OPEN:
            if iop.flags & os.O_WRONLY:
                path = iop.fname.encode("utf-8")
                if not os.path.isdir(os.path.dirname(path)):
                    os.makedirs(os.path.dirname(path))
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            else:
                self.data = self.content(iop.fname)
                self.position = 0
        elif iop.func == bareosfd.IO_READ:
            chunk = self.data[self.position:self.position + iop.count]
            self.position += len(chunk)
            iop.buf = bytearray(chunk)
            iop.status = len(chunk)
        elif iop.func == bareosfd.IO_WRITE:
            iop.status = os.write(self.fd, iop.buf)
        elif iop.func == bareosfd.IO_SEEK:
            os.lseek(self.fd, iop.offset, iop.whence)
        elif iop.func == bareosfd.IO_CLOSE and self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return bareosfd.bRC_OK

    def get_acl(self, acl):
        if "acl" in self.options:
            acl.content = bytearray(self.options["acl"].encode("utf-8"))
        return bareosfd.bRC_OK

    def get_xattr(self, xattr):
        if "xattr" in self.options:
            name, value = self.options["xattr"].split("=", 1)
            xattr.name = bytearray(name.encode("utf-8"))
            xattr.value = bytearray(value.encode("utf-8"))
        return bareosfd.bRC_OK

    def check_file(self, fname):
        return bareosfd.bRC_OK

    # restore
    def start_restore_file(self, cmd):
        return bareosfd.bRC_OK

    def create_file(self, restorepkt):
        restorepkt.create_status = bareosfd.CF_EXTRACT
        return bareosfd.bRC_OK

    def set_file_attributes(self, restorepkt):
        return bareosfd.bRC_OK

    def end_restore_file(self):
        return bareosfd.bRC_OK

    def set_acl(self, acl):
        return bareosfd.bRC_OK

    def set_xattr(self, xattr):
        return bareosfd.bRC_OK

    def restore_object_data(self, rop):
        return bareosfd.bRC_OK


ENTRY_POINTS = ("parse_plugin_definition", "handle_plugin_event", "start_backup_file",
                "end_backup_file", "plugin_io", "get_acl", "get_xattr", "check_file",
                "start_restore_file", "create_file", "set_file_attributes", "end_restore_file",
                "set_acl", "set_xattr", "restore_object_data")


def entry_points(namespace, cls, skip=()):
    """Define the module-level entry points of a plugin module forwarding to one
    ``cls`` instance made by ``load_bareos_plugin`` (leave out ``skip``)."""
    state = {}

    def load_bareos_plugin(plugindef):
        state["plugin"] = cls(plugindef)
        return bareosfd.bRC_OK

    def forward(name):
        def call(*args):
            return getattr(state["plugin"], name)(*args)
        call.__name__ = name
        return call

    namespace["load_bareos_plugin"] = load_bareos_plugin
    for name in ENTRY_POINTS:
        if name not in skip:
            namespace[name] = forward(name)
