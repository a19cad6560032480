"""The exceptions of ``vz7native.image``: one family under :class:`ImageError`."""


class ImageError(Exception):
    """Something about a ploop image (descriptor, delta, partition table) is wrong."""


class DescriptorError(ImageError):
    """DiskDescriptor.xml is missing, unreadable or malformed."""


class SnapshotNotFound(ImageError, LookupError):
    """The descriptor has no snapshot (image) with the given GUID."""


class FormatError(ImageError):
    """A delta file is not what its header, BAT or descriptor claim.

    Bad signature, truncated file, BAT entries outside the data area or
    overlapping, sizes that do not match. The message names the file.
    """


class NoPartitionTable(ImageError):
    """The virtual disk carries no GPT."""


class WriteError(ImageError, OSError):
    """A delta or descriptor could not be written (disk full, I/O error).

    ``errno`` says why; the message names the file and whether the image was
    left as it was.
    """


class ToolError(ImageError):
    """An external program (parted, mkfs.ext4) is missing or failed."""


class TreeDoesNotFit(ImageError):
    """A directory tree is larger than the disk it should be copied into."""
