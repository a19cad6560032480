"""Bareos versions the simulator reproduces and what changed between them (contract §1)."""
import re


class BareosVersionError(ValueError):
    """A Bareos version the simulator does not know."""


class BareosVersion(object):
    """A Bareos FD release, e.g. ``BareosVersion(23)`` or ``BareosVersion("22.1.0")``.

    A bare major number means the first release of that line (``22`` is 22.0.0):
    the strictest reading, since fixes such as the 22.1.x backport of PR #1505 or
    23.0.1's ``bytes`` buffers arrived later in a line.  ``26`` stands for the
    master snapshot the contract describes (26.0.0-pre).
    """

    SUPPORTED_MAJORS = (20, 21, 22, 23, 24, 25, 26)

    def __init__(self, version):
        if isinstance(version, BareosVersion):
            parts = version.parts
        elif isinstance(version, int) and not isinstance(version, bool):
            parts = (version, 0, 0)
        elif isinstance(version, tuple) and all(isinstance(p, int) for p in version):
            parts = (tuple(version) + (0, 0, 0))[:3]
        elif isinstance(version, str) and re.match(r"^\d+(\.\d+){0,2}$", version):
            parts = (tuple(int(p) for p in version.split(".")) + (0, 0, 0))[:3]
        else:
            raise BareosVersionError("bareos_version: expected 20..26 or 'X.Y.Z', got %r"
                                     % (version,))
        if parts[0] not in self.SUPPORTED_MAJORS:
            raise BareosVersionError("bareos_version: %s is not simulated (supported: %s)"
                                     % (".".join(map(str, parts)),
                                        ", ".join(map(str, self.SUPPORTED_MAJORS))))
        self.parts = parts

    def __repr__(self):
        return "BareosVersion(%r)" % str(self)

    def __str__(self):
        return "%d.%d.%d" % self.parts

    def __eq__(self, other):
        return isinstance(other, BareosVersion) and other.parts == self.parts

    def __hash__(self):
        return hash(self.parts)

    @property
    def major(self):
        return self.parts[0]

    # --- features, each with the contract row it comes from -----------------

    @property
    def fname_utf8_crash(self):
        """20.0.x: a ``fname`` that is not UTF-8 encodable crashes the FD (§1, §7.1)."""
        return self.major == 20

    @property
    def non_str_fname_ignored(self):
        """20.0.x: a non-str ``fname`` is silently ignored (§2.1)."""
        return self.major == 20

    @property
    def do_io_in_core(self):
        """22.0+: filedes members, ``iostat_*`` constants, ``bIOPstatus`` (§1, §4)."""
        return self.major >= 22

    @property
    def since_api(self):
        """22.1.x backport / 23+: bVarCheckChanges, plugin ``save_time`` honoured,
        ``SetValue(bVarSinceTime|bVarCheckChanges)`` (§1, §3.1, §5)."""
        return self.parts >= (22, 1, 0)

    @property
    def used_config(self):
        """23+: ``bVarUsedConfig`` (§1)."""
        return self.major >= 23

    @property
    def start_backup_file_codes(self):
        """23+: Skip/Stop/Error/other from ``start_backup_file`` (§2.1)."""
        return self.major >= 23

    @property
    def hardlinks_default(self):
        """FileSet hardlink handling: on in 20-22, off (FO_NO_HARDLINK) from 23 (§1, §3.4)."""
        return self.major < 23

    @property
    def io_read_count(self):
        """Classic IO_READ ``count``: 64 KiB up to 22, 256 KiB from 23 (§4)."""
        return 65536 if self.major < 23 else 262144

    @property
    def io_read_accepts_bytes(self):
        """23.0.1+: ``bytes`` in ``IoPacket.buf`` is copied back on IO_READ (§1, §3.5)."""
        return self.parts >= (23, 0, 1)

    @property
    def stat_times_signed(self):
        """25+: StatPacket times are T_LONG instead of T_UINT (§1, §3.5)."""
        return self.major >= 25

    @property
    def master_snapshot(self):
        """26 (master snapshot): ``original_*_name``, ``bVarAccurateOptions``,
        ``bAccurateOption*``, FO_XXH128 (§1, §3)."""
        return self.major >= 26

    @property
    def backup_command_error_fails_job(self):
        """23+: a non-OK ``parse_plugin_definition`` at bEventBackupCommand aborts the
        Plugin line *as error*; 20-22 silently (§2 table)."""
        return self.major >= 23
