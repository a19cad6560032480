"""DiskDescriptor.xml: which delta files make up a disk and how they stack.

Reads both dialects: ``<Parallels_disk_image>`` (libploop 1.x writes it) and
``<Virtuozzo_disk_image>`` (libploop 7.x), including the 7.x additions
(``<Temporary/>`` in a ``<Shot>``, ``Max_delta_size``, encryption and volume
data, which do not change how the disk reads).

Where deltas may live: a relative ``<File>`` is resolved against the real
directory of the descriptor, as libploop does, and must stay inside it: a
name that climbs out with ``..`` (``../../other/root.hds``) is refused, since
it makes one image read another's files. An absolute ``<File>`` is accepted
(libploop's ``restore-descriptor`` writes them); ``verify`` and ``vz7ploop
check`` say for every delta where it really lives and whether that is outside
the image directory (a symlink inside it may point elsewhere).
"""
import collections
import os
import re
import xml.etree.ElementTree as ElementTree

from vz7native.image.errors import DescriptorError, SnapshotNotFound
from vz7native.image.files import open_regular
from vz7native.paths import descriptor_path, fspath, show

SECTOR_SIZE = 512
# libploop gives the live top delta this fixed GUID; a fresh image's base has it too.
TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
NULL_GUID = "{00000000-0000-0000-0000-000000000000}"
ROOT_ELEMENTS = ("Parallels_disk_image", "Virtuozzo_disk_image")
DEFAULT_BLOCKSIZE = 2048  # sectors: 1 MiB clusters

_GUID_RE = re.compile(r"^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$")

ImageEntry = collections.namedtuple("ImageEntry", "guid file kind")
ImageEntry.__doc__ = """One delta file of the disk.

``guid`` as the descriptor spells it, ``file`` the absolute path (bytes; an
absolute ``<File>`` as written, a relative one below the image directory) and
``kind`` what the file is: ``"Compressed"`` (a ploop1 delta with header and
BAT) or ``"Plain"`` (a raw disk, no header). In raw mode libploop writes
``Plain`` for every image, but only the base is raw: the deltas of later
snapshots are ploop1, and ``kind`` says so.
"""

Shot = collections.namedtuple("Shot", "guid parent_guid temporary")
Shot.__doc__ = """One node of the snapshot tree: ``parent_guid`` is NULL_GUID for the
base; ``temporary`` marks a temporary snapshot (``<Temporary/>``)."""


def round_up(value, unit):
    """``value`` rounded up to a multiple of ``unit``."""
    return -(-value // unit) * unit


def guid_key(guid):
    """Lower-case ``{...}`` form used to compare GUIDs, or None if malformed."""
    match = _GUID_RE.match(guid) if isinstance(guid, str) else None
    return "{%s}" % match.group(1).lower() if match else None


class DiskDescriptor(object):
    """A parsed DiskDescriptor.xml (see :func:`read_descriptor`).

    Attributes: ``path`` (absolute xml path, bytes), ``root`` (the root element
    name), ``size`` (virtual size, bytes), ``cluster_size`` (bytes), ``mode``
    (``"expanded"``, ``"preallocated"`` or ``"raw"``), ``images`` (ordered
    ``{guid: ImageEntry}``), ``snapshots`` (list of :class:`Shot`) and
    ``top_guid`` (the live top).
    """

    def __init__(self, path, root, size, cluster_size, mode, images, snapshots, top_guid):
        self.path = path
        self.root = root
        self.size = size
        self.cluster_size = cluster_size
        self.mode = mode
        self.images = images
        self.snapshots = snapshots
        self.top_guid = top_guid

    def __repr__(self):
        return "<DiskDescriptor %s: %d bytes, %d image(s), top %s>" % (
            show(self.path), self.size, len(self.images), self.top_guid)

    def resolve_guid(self, guid):
        """The descriptor's spelling of ``guid`` (braces and case do not matter)."""
        key = guid_key(guid)
        for known in self.images:
            if guid_key(known) == key:
                return known
        raise SnapshotNotFound("%s has no snapshot %s" % (show(self.path), guid))

    def parent_of(self, guid):
        """Parent GUID of ``guid`` (NULL_GUID for the base)."""
        guid = self.resolve_guid(guid)
        for shot in self.snapshots:
            if guid_key(shot.guid) == guid_key(guid):
                return shot.parent_guid
        raise DescriptorError("%s: image %s has no <Shot> entry" % (show(self.path), guid))

    def chain(self, guid=None):
        """The images from ``guid`` (default: the top) down to the base, as
        a list of :class:`ImageEntry`."""
        guid = self.resolve_guid(self.top_guid if guid is None else guid)
        entries = []
        while guid_key(guid) != guid_key(NULL_GUID):
            if len(entries) > len(self.images):
                raise DescriptorError("%s: the snapshot tree has a cycle through %s"
                                      % (show(self.path), guid))
            try:
                entries.append(self.images[self.resolve_guid(guid)])
            except SnapshotNotFound:
                raise DescriptorError("%s: snapshot %s names parent %s, which has no image"
                                      % (show(self.path), entries[-1].guid, guid)) from None
            guid = self.parent_of(guid)
        return entries


def _text(node, name, dd, required=True):
    child = node.find(name)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise DescriptorError("%s: <%s> is missing or empty" % (show(dd), name))
        return None
    return child.text.strip()


def _number(node, name, dd, required=True):
    text = _text(node, name, dd, required)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise DescriptorError("%s: <%s> is not a number: %r" % (show(dd), name, text)) from None


def read_descriptor(path):
    """Parse DiskDescriptor.xml (``path`` is the xml or its directory).

    Raises :class:`DescriptorError` when it is missing or malformed.
    """
    dd = descriptor_path(path)
    try:
        with open(open_regular(dd, error=DescriptorError, what="descriptor"), "rb") as f:
            root = ElementTree.parse(f).getroot()
    except OSError as e:
        raise DescriptorError("cannot read %s: %s" % (show(dd), e.strerror or e)) from None
    except ElementTree.ParseError as e:
        raise DescriptorError("%s is not well-formed XML: %s" % (show(dd), e)) from None
    if root.tag not in ROOT_ELEMENTS:
        raise DescriptorError("%s: root element <%s> is neither <%s> nor <%s>"
                              % ((show(dd), root.tag) + ROOT_ELEMENTS))
    params = root.find("Disk_Parameters")
    storages = root.findall("StorageData/Storage")
    snapshots_node = root.find("Snapshots")
    for node, name in ((params, "Disk_Parameters"), (snapshots_node, "Snapshots")):
        if node is None:
            raise DescriptorError("%s: <%s> is missing" % (show(dd), name))
    if len(storages) != 1:
        raise DescriptorError("%s: expected one <StorageData><Storage>, found %d"
                              % (show(dd), len(storages)))
    storage = storages[0]
    size = _number(params, "Disk_size", dd, required=False)
    if size is None:
        size = _number(storage, "End", dd)
    blocksize = _number(storage, "Blocksize", dd, required=False) or DEFAULT_BLOCKSIZE
    if blocksize <= 0 or blocksize & (blocksize - 1):
        raise DescriptorError("%s: <Blocksize> %d is not a power of two" % (show(dd), blocksize))
    preallocated = _number(storage, "Preallocated", dd, required=False)
    if preallocated not in (None, 0, 1):
        raise DescriptorError("%s: <Preallocated> must be 0 or 1" % show(dd))

    basedir = os.path.dirname(os.path.realpath(dd))
    images = collections.OrderedDict()
    raw = False
    for node in storage.findall("Image"):
        guid = _text(node, "GUID", dd)
        if guid_key(guid) is None:
            raise DescriptorError("%s: image GUID %r is malformed" % (show(dd), guid))
        kind = _text(node, "Type", dd, required=False) or "Compressed"
        if kind not in ("Compressed", "Plain"):
            raise DescriptorError("%s: image %s has unknown <Type> %r" % (show(dd), guid, kind))
        raw = raw or kind == "Plain"
        name = fspath(_text(node, "File", dd))
        if not os.path.isabs(name) and os.path.normpath(name).split(b"/")[0] == b"..":
            raise DescriptorError("%s: image %s: <File> %s leads out of the image directory "
                                  "(a relative name must stay inside it; an absolute path "
                                  "is accepted)" % (show(dd), guid, show(name)))
        images[guid] = ImageEntry(guid, os.path.join(basedir, name), kind)
    if not images:
        raise DescriptorError("%s lists no <Image>" % show(dd))
    if raw and preallocated:
        raise DescriptorError("%s: <Preallocated> is not compatible with Plain images" % show(dd))
    mode = "raw" if raw else ("preallocated" if preallocated else "expanded")

    snapshots = []
    for node in snapshots_node.findall("Shot"):
        guid = _text(node, "GUID", dd)
        parent = _text(node, "ParentGUID", dd)
        if guid_key(guid) is None or guid_key(parent) is None:
            raise DescriptorError("%s: <Shot> %s / parent %s is malformed"
                                  % (show(dd), guid, parent))
        snapshots.append(Shot(guid, parent, node.find("Temporary") is not None))
    top_guid = _text(snapshots_node, "TopGUID", dd, required=False)
    # Old descriptors (libploop accepts them): one image and no <Shot>, or no <TopGUID>.
    if not snapshots and len(images) == 1:
        snapshots.append(Shot(next(iter(images)), NULL_GUID, False))
    if top_guid is None and len(images) == 1:
        top_guid = next(iter(images))
    if top_guid is None:
        raise DescriptorError("%s: <TopGUID> is missing" % show(dd))
    if len(snapshots) != len(images):
        raise DescriptorError("%s lists %d images but %d snapshots"
                              % (show(dd), len(images), len(snapshots)))
    if raw:
        # libploop marks every image Plain in raw mode; only the base is raw.
        bases = {guid_key(s.guid) for s in snapshots
                 if guid_key(s.parent_guid) == guid_key(NULL_GUID)}
        for guid, entry in images.items():
            images[guid] = entry._replace(
                kind="Plain" if guid_key(guid) in bases else "Compressed")
    descriptor = DiskDescriptor(dd, root.tag, size * SECTOR_SIZE, blocksize * SECTOR_SIZE,
                                mode, images, snapshots, top_guid)
    image_keys = {guid_key(g) for g in images}
    for shot in snapshots:
        if guid_key(shot.guid) not in image_keys:
            raise DescriptorError("%s: snapshot %s has no image" % (show(dd), shot.guid))
    try:
        descriptor.top_guid = descriptor.resolve_guid(top_guid)
    except SnapshotNotFound:
        raise DescriptorError("%s: <TopGUID> %s has no image" % (show(dd), top_guid)) from None
    return descriptor


def chs_geometry(sectors):
    """(cylinders, heads, sectors per track) that libploop records for a disk.

    Between 1,032,192 and 16,777,216 sectors it is x/16/63; otherwise the
    largest of 63/32/16/8 sectors and 16/8/4/2 heads that divide the size, or
    pure LBA (x/1/1) when none does.
    """
    if 1032192 < sectors < 16777216:
        return sectors // (16 * 63), 16, 63
    track = next((s for s in (63, 32, 16, 8) if sectors % s == 0), None)
    if track is not None:
        heads = next((h for h in (16, 8, 4, 2) if (sectors // track) % h == 0), None)
        if heads is not None:
            return sectors // track // heads, heads, track
    return sectors, 1, 1


def _xml_escape(text):
    """``&``, ``<`` and ``>`` as XML character data needs them. Not
    xml.sax.saxutils: it imports urllib.request (http.client, email, ssl), about
    0.05 to 0.1 s in every process and Bareos job that reads a descriptor."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


def descriptor_xml(size, cluster_size, image_name, guid=TOP_GUID):
    """DiskDescriptor.xml text (libploop 1.x dialect) for a one-image expanded disk."""
    sectors = size // SECTOR_SIZE
    cylinders, heads, _ = chs_geometry(sectors)
    name = os.fsdecode(image_name)
    return (
        '<?xml version="1.0"?>\n'
        "<Parallels_disk_image>\n"
        "  <Disk_Parameters>\n"
        "    <Disk_size>%(sectors)d</Disk_size>\n"
        "    <Cylinders>%(cylinders)d</Cylinders>\n"
        "    <Heads>%(heads)d</Heads>\n"
        "    <Sectors>%(track)d</Sectors>\n"
        "    <Padding>0</Padding>\n"
        "  </Disk_Parameters>\n"
        "  <StorageData>\n"
        "    <Storage>\n"
        "      <Start>0</Start>\n"
        "      <End>%(sectors)d</End>\n"
        "      <Blocksize>%(blocksize)d</Blocksize>\n"
        "      <Image>\n"
        "        <GUID>%(guid)s</GUID>\n"
        "        <Type>Compressed</Type>\n"
        "        <File>%(file)s</File>\n"
        "      </Image>\n"
        "    </Storage>\n"
        "  </StorageData>\n"
        "  <Snapshots>\n"
        "    <TopGUID>%(guid)s</TopGUID>\n"
        "    <Shot>\n"
        "      <GUID>%(guid)s</GUID>\n"
        "      <ParentGUID>%(null)s</ParentGUID>\n"
        "    </Shot>\n"
        "  </Snapshots>\n"
        "</Parallels_disk_image>\n"
    ) % {"sectors": sectors, "cylinders": cylinders, "heads": heads,
         # libploop derives <Sectors> from the other two rather than storing the track size.
         "track": sectors // (cylinders * heads), "blocksize": cluster_size // SECTOR_SIZE,
         "guid": guid, "null": NULL_GUID, "file": _xml_escape(name)}
