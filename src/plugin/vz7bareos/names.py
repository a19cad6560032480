"""Bytes paths as names Bareos can carry, and back.

python3-fd takes only valid UTF-8 ``str`` names (a name it cannot encode
crashes or fails the job, bareos-fd-contract.md §7), but a container's files
may be named with any bytes. Each path component (and each symlink target, as
one unit) is therefore sent as:

* itself, when it is valid UTF-8 and does not start with the escape marker
  ``%vz7%`` (nearly every name: the catalog shows them unchanged);
* otherwise ``%vz7%`` followed by the component's bytes, every byte outside
  printable ASCII and every ``%`` written as ``%XX`` (upper-case hex).

A real file whose name starts with ``%vz7%`` is escaped too, so decoding is
unambiguous: a component is decoded if and only if it starts with the marker.
Example: ``b"K\\xdcBLER.csv"`` is catalogued as ``%vz7%K%DCBLER.csv``, a file
literally called ``%vz7%x`` as ``%vz7%%25vz7%25x``.
"""
MARKER = "%vz7%"
_MARKER_BYTES = MARKER.encode("ascii")
# printable ASCII except "%": kept as they are inside an escaped component
_PLAIN = frozenset(range(0x20, 0x7F)) - {0x25}
_HEX = "0123456789ABCDEF"


class EscapeError(ValueError):
    """A catalogued name that is not a valid escaped name."""


def _escape(data):
    return MARKER + "".join(
        chr(b) if b in _PLAIN else "%" + _HEX[b >> 4] + _HEX[b & 15] for b in data)


def encode_component(data):
    """One name (bytes, no ``/``) as the str Bareos sees."""
    if not data.startswith(_MARKER_BYTES):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _escape(data)


def encode_path(path):
    """A bytes path as the str Bareos sees: each component encoded."""
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return "/".join(encode_component(part) for part in path.split(b"/"))
    if MARKER not in text:
        return text
    return "/".join(encode_component(part) for part in path.split(b"/"))


def encode_target(target):
    """A symlink target (bytes) as one str: unchanged when it is valid UTF-8 and
    does not start with the marker, else escaped as a whole."""
    return encode_component(target)


def decode_component(text):
    """The bytes of one catalogued name component."""
    if not text.startswith(MARKER):
        return text.encode("utf-8")
    body = text[len(MARKER):]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "%":
            digits = body[i + 1:i + 3]
            if len(digits) != 2 or not all(d in _HEX for d in digits):
                raise EscapeError("%r is not a valid escaped name" % text)
            out.append(int(digits, 16))
            i += 3
        else:
            out += ch.encode("utf-8")
            i += 1
    return bytes(out)


def decode_path(text):
    """The bytes path of a catalogued name (inverse of :func:`encode_path`)."""
    if MARKER not in text:
        return text.encode("utf-8")
    return b"/".join(decode_component(part) for part in text.split("/"))


def decode_target(text):
    """The bytes of a catalogued symlink target (inverse of :func:`encode_target`)."""
    return decode_component(text)


def shown(value):
    """Any path or text as a str safe for Bareos messages (never a surrogate)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
