"""A plugin written like the one of Bareos's ``py3plug-fd-basic`` systemtest:
module-level entry points forwarding to one object, which reports every call as
a job message.  ``tests/test_fdsim_golden.py`` compares those messages with the
golden callback orders of contract §2.4.  One virtual, empty file."""
import os

import bareosfd

plugin = None


def _log(text):
    bareosfd.JobMessage(bareosfd.M_INFO, text + "\n")


class GoldenPlugin(object):
    def __init__(self, plugindef):
        _log("__init__(%r)" % plugindef)
        # The events the stock BareosFdPluginBaseclass registers (§2.2).
        bareosfd.RegisterEvents([bareosfd.bEventJobEnd, bareosfd.bEventEndBackupJob,
                                 bareosfd.bEventEndFileSet, bareosfd.bEventHandleBackupFile,
                                 bareosfd.bEventStartBackupJob,
                                 bareosfd.bEventStartRestoreJob])
        self.fd = None

    def parse_plugin_definition(self, plugindef):
        _log("parse_plugin_definition(%r)" % plugindef)
        return bareosfd.bRC_OK

    def handle_plugin_event(self, event):
        _log("handle_plugin_event(%d)" % event)
        return bareosfd.bRC_OK

    def start_backup_file(self, savepkt):
        _log("start_backup_file")
        savepkt.fname = "/golden/file.txt"
        statp = bareosfd.StatPacket()
        statp.st_size = 0
        savepkt.statp = statp
        savepkt.type = bareosfd.FT_REG
        return bareosfd.bRC_OK

    def end_backup_file(self):
        _log("end_backup_file")
        return bareosfd.bRC_OK

    def plugin_io(self, iop):
        name = {bareosfd.IO_OPEN: "open", bareosfd.IO_READ: "read",
                bareosfd.IO_WRITE: "write", bareosfd.IO_CLOSE: "close",
                bareosfd.IO_SEEK: "seek"}[iop.func]
        _log("plugin_io(%s)" % name)
        if iop.func == bareosfd.IO_OPEN and iop.flags & os.O_WRONLY:
            self.fd = os.open(iop.fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        elif iop.func == bareosfd.IO_WRITE:
            iop.status = os.write(self.fd, iop.buf)
        elif iop.func == bareosfd.IO_CLOSE and self.fd is not None:
            os.close(self.fd)
            self.fd = None
        elif iop.func == bareosfd.IO_READ:
            iop.buf = bytearray()
            iop.status = 0
        return bareosfd.bRC_OK

    def get_acl(self, acl):
        _log("get_acl")
        acl.content = bytearray(b"user::rw-")
        return bareosfd.bRC_OK

    def get_xattr(self, xattr):
        _log("get_xattr")
        xattr.name = bytearray(b"user.golden")
        xattr.value = bytearray(b"yes")
        return bareosfd.bRC_OK

    def start_restore_file(self, cmd):
        _log("start_restore_file")
        return bareosfd.bRC_OK

    def create_file(self, restorepkt):
        _log("create_file")
        restorepkt.create_status = bareosfd.CF_CORE
        return bareosfd.bRC_OK

    def set_file_attributes(self, restorepkt):
        _log("set_file_attributes")
        return bareosfd.bRC_OK

    def set_acl(self, acl):
        _log("set_acl")
        return bareosfd.bRC_OK

    def set_xattr(self, xattr):
        _log("set_xattr")
        return bareosfd.bRC_OK

    def end_restore_file(self):
        _log("end_restore_file")
        return bareosfd.bRC_OK

    def check_file(self, fname):
        _log("check_file(%r)" % fname)
        return bareosfd.bRC_OK


def load_bareos_plugin(plugindef):
    global plugin
    plugin = GoldenPlugin(plugindef)
    return bareosfd.bRC_OK


def parse_plugin_definition(plugindef):
    return plugin.parse_plugin_definition(plugindef)


def handle_plugin_event(event):
    return plugin.handle_plugin_event(event)


def start_backup_file(savepkt):
    return plugin.start_backup_file(savepkt)


def end_backup_file():
    return plugin.end_backup_file()


def plugin_io(iop):
    return plugin.plugin_io(iop)


def get_acl(acl):
    return plugin.get_acl(acl)


def get_xattr(xattr):
    return plugin.get_xattr(xattr)


def start_restore_file(cmd):
    return plugin.start_restore_file(cmd)


def create_file(restorepkt):
    return plugin.create_file(restorepkt)


def set_file_attributes(restorepkt):
    return plugin.set_file_attributes(restorepkt)


def set_acl(acl):
    return plugin.set_acl(acl)


def set_xattr(xattr):
    return plugin.set_xattr(xattr)


def end_restore_file():
    return plugin.end_restore_file()


def check_file(fname):
    return plugin.check_file(fname)
