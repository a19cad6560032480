"""The plugin's options: where they come from, what they mean, how they merge.

Bareos hands the plugin ``"k1=v1:k2=v2:"`` strings (``\\:`` keeps a colon inside
a value): each FileSet ``Plugin =`` line, the Job's ``FD Plugin Options`` and
``run ... pluginoptions=``, the restore's ``pluginoptions=``. A container's
options are those of its ``Plugin =`` line, completed by the job-wide ones
(``run ... pluginoptions=`` first, then the Job's ``FD Plugin Options``): the
first value of a key wins, as in the Bareos plugin base class the older plugin
used, so its configurations mean what they meant.
"""
import re

# name: (default, help). Defaults are strings, parsed like given values.
KNOWN = {
    "name": (None, "the container's name (required for backups, with uuid)"),
    "uuid": (None, "the container's UUID (required for backups, with name)"),
    "blocker": (None, "a glob inside the container; a match vetoes the backup"),
    "lockfile": (None, "a lock file on the host held for the job (absolute path)"),
    "lock_timeout": ("3600", "seconds to wait for the lockfile"),
    "ct_lock_timeout": ("10", "seconds to wait for another job on the same container"),
    "excluded_backup_paths": (None, "comma-separated paths inside the container not saved"),
    "exclude": (None, "comma-separated globs: names (no /) or paths inside the container"),
    "mount_backend": ("auto", "auto, kernel or portable: how the read-only view is mounted"),
    "mount_base": ("/mnt/bareos", "where the container's view is mounted (host path)"),
    "host_root": ("/", "the host's root (a sandbox host for tests)"),
    "restore": ("ct", "ct (whole container) or files (alias file): what a restore does"),
    "diskspace": (None, "restore=ct: size of the new disk (GiB, or a number with K/M/G/T)"),
    "disk": (None, "alias of diskspace"),
    "new_name": (None, "restore=ct: the restored container's name"),
    "new_uuid": (None, "restore=ct: the restored container's UUID"),
    "register_timeout": ("120", "restore=ct: seconds for prlctl/vzctl register"),
}
_SPLIT = re.compile(r"(?<!\\):")


class OptionError(ValueError):
    """A bad option: the message names it."""


def parse(text):
    """``"k1=v1:k2=v2:"`` as a list of (key, value), in order."""
    items = []
    for part in _SPLIT.split(text or ""):
        if not part:
            continue
        part = part.replace("\\:", ":")
        key, sep, value = part.partition("=")
        if not sep:
            raise OptionError("plugin option %r has no value (expected key=value)" % part)
        items.append((key.strip(), value))
    return items


def unknown(items):
    """Keys of ``items`` that are no option of this plugin."""
    return sorted({k for k, _ in items if k not in KNOWN})


def known_list():
    return ", ".join(sorted(KNOWN))


def merge(*sources):
    """One dict from lists of (key, value): the first value of each key wins."""
    merged = {}
    for items in sources:
        for key, value in items:
            merged.setdefault(key, value)
    return merged


def value(options, key):
    """The value of ``key`` in ``options`` or its default (None if it has none)."""
    found = options.get(key)
    return KNOWN[key][0] if found is None or found == "" else found


def seconds(options, key):
    text = value(options, key)
    try:
        result = float(text)
    except (TypeError, ValueError):
        result = -1
    if result < 0:
        raise OptionError("option %s=%s is not a number of seconds" % (key, text))
    return result


def choice(options, key, choices, aliases=None):
    text = value(options, key)
    text = (aliases or {}).get(text, text)
    if text not in choices:
        raise OptionError("option %s=%s is not one of %s" % (key, text, ", ".join(choices)))
    return text


def strip_quotes(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def comma_list(options, key):
    """A comma-separated option as a list of non-empty items, quotes stripped."""
    text = value(options, key)
    if not text:
        return []
    return [item for item in (strip_quotes(part) for part in strip_quotes(text).split(","))
            if item]


def absolute_path(options, key):
    text = value(options, key)
    if text is None:
        return None
    text = strip_quotes(text)
    if not text.startswith("/"):
        raise OptionError("option %s=%s is not an absolute path" % (key, text))
    return text


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.I)
_UNITS = {"": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size(options, key):
    """A size in bytes: a number of GiB, or a number with K, M, G or T."""
    text = value(options, key)
    if text is None:
        return None
    match = _SIZE.match(strip_quotes(text))
    if not match:
        raise OptionError("option %s=%s is not a size (a number of GiB, or a number with "
                          "K, M, G or T, e.g. 250 or 500M)" % (key, text))
    result = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if result <= 0:
        raise OptionError("option %s=%s is not a size larger than 0" % (key, text))
    return result
