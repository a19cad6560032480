"""The ploop image format in pure Python: read, check and write ploop disks
without libploop or the ploop kernel driver (stdlib only, Python 3.6+).

    >>> from vz7native import image
    >>> with image.open_virtual_disk("/vz/private/101/root.hdd", guid=snap) as disk:
    ...     part = image.find_partition(disk)         # GPT: where ext4 starts
    ...     superblock = disk.read(part.offset + 1024, 1024)
    >>> image.verify("/vz/private/101/root.hdd").ok
    True

The format in five minutes
--------------------------
A ploop disk is a directory with **DiskDescriptor.xml** and one or more
**delta files**. The descriptor (root element ``Parallels_disk_image`` from
libploop 1.x, ``Virtuozzo_disk_image`` from 7.x) gives the virtual size
(``Disk_size``, 512-byte sectors), the cluster size (``Blocksize``, sectors;
2048 = 1 MiB), each image (``GUID``, ``Type`` Compressed or Plain, ``File``
relative to the descriptor or absolute) and the snapshot tree (``Shot``:
``GUID`` and ``ParentGUID``; ``TopGUID`` names the live top, which always
has GUID {5fbaabe3-6958-40ff-92a7-860e329aab41}).

A **ploop1 delta** ("Compressed", expanded or preallocated) starts with a
64-byte little-endian header::

    0  16s signature  "WithoutFreeSpace" = v1, "WithouFreSpacExt" = v2
    16 u32 type (2)   20 u32 heads   24 u32 cylinders (CHS, informational)
    28 u32 cluster size in sectors   32 u32 BAT entries (= virtual clusters)
    36 u32 (v1) / u64 (v2) virtual size in sectors, whole clusters
    44 u32 in use: 0x746F6E59 while the kernel has it open read-write
    48 u32 first data block, in sectors   52 u32 flags (1 = empty)

then the **BAT**, one u32 per virtual cluster. Header and BAT are padded to
whole clusters; data clusters follow, appended as they are first written. BAT
entry *i* = 0: cluster *i* is not in this delta; otherwise it is at file
offset entry x 512 (v1) or entry x cluster size (v2). Files are whole
clusters and never sparse. A **raw** ("Plain") image is a plain disk: virtual
byte *x* is file byte *x*; in raw mode only the base is raw, the deltas of
later snapshots are ploop1.

**Snapshots** stack deltas: taking snapshot G renames the current top to G
(its file stays) and starts a new empty top delta. To read cluster *i* as
snapshot G sees it, walk from G through the ParentGUIDs to the base and take
the first delta whose BAT holds *i*; zeros if none does. Inside the disk
libploop puts a GPT with one ext4 partition one cluster in (1 MiB).

The rooms
---------
``descriptor`` (DiskDescriptor.xml), ``delta`` (header and BAT), ``reader``
(:func:`open_virtual_disk`), ``gpt`` (:func:`find_partition`), ``verify``
(:func:`verify`), ``writer`` (:func:`import_raw`, :class:`InPlaceImage`,
:func:`write_clusters`, :func:`clear_in_use`), ``ctdisk`` (:func:`make_ct_disk`:
container disks from a directory; :func:`new_ct_image`: an empty one to fill in
place). Paths are accepted as str or bytes and returned as bytes. Every error is
an :class:`ImageError`.
"""
from vz7native.image.ctdisk import make_ct_disk, make_ct_raw_disk, new_ct_image, partition_layout
from vz7native.image.delta import Delta, Ploop1Delta, RawDelta
from vz7native.image.descriptor import (NULL_GUID, TOP_GUID, DiskDescriptor, ImageEntry, Shot,
                                        read_descriptor)
from vz7native.image.errors import (DescriptorError, FormatError, ImageError, NoPartitionTable,
                                    SnapshotNotFound, ToolError, TreeDoesNotFit, WriteError)
from vz7native.image.gpt import LINUX_FILESYSTEM, Partition, find_partition
from vz7native.image.reader import RawDiskFile, VirtualDisk, open_virtual_disk
from vz7native.image.verify import DeltaReport, VerifyReport, verify
from vz7native.image.writer import (DEFAULT_CLUSTER_SIZE, InPlaceImage, clear_in_use,
                                    import_raw, write_clusters)
from vz7native.paths import DESCRIPTOR_NAME, descriptor_path

__all__ = [
    "DEFAULT_CLUSTER_SIZE", "DESCRIPTOR_NAME", "LINUX_FILESYSTEM", "NULL_GUID", "TOP_GUID",
    "Delta", "DeltaReport", "DescriptorError", "DiskDescriptor", "FormatError", "ImageEntry",
    "ImageError", "InPlaceImage", "NoPartitionTable", "Partition", "Ploop1Delta", "RawDelta",
    "RawDiskFile",
    "Shot", "SnapshotNotFound", "ToolError", "TreeDoesNotFit", "VerifyReport", "VirtualDisk",
    "WriteError", "clear_in_use", "descriptor_path",
    "find_partition", "import_raw", "make_ct_disk", "make_ct_raw_disk", "new_ct_image",
    "open_virtual_disk",
    "partition_layout", "read_descriptor", "verify", "write_clusters",
]
