"""CPython ``PyMemberDef`` semantics in pure Python (contract §3.5, §3.6).

The packet types of the real ``bareosfd`` are C types whose attributes are
``PyMemberDef`` members (T_UINT, T_USHORT, T_INT, T_LONG, T_LONGLONG,
T_ULONGLONG, T_BOOL, T_STRING, T_OBJECT).  What an assignment does depends on
the member kind *and on the running CPython*: warnings, truncation, whether a
float is accepted, what is left in the field after an error.  The descriptors
below reproduce ``PyMember_SetOne``/``PyMember_GetOne`` of the running
interpreter, as measured with ``_testcapi._test_structmembersType`` on
CPython 3.6 to 3.13 (``tests/test_fdsim_structmember.py`` compares them with
that type wherever ``_testcapi`` exists).

Each descriptor keeps the *C value* (what the core reads): unsigned members hold
their unsigned value, T_STRING holds ``bytes`` or ``None`` (NULL), T_OBJECT holds
an object or :data:`NULL`.  The simulated core reads and writes that C value with
:func:`c_get` and :func:`c_set`.
"""
import operator
import sys
import warnings

PY = sys.version_info[:2]

#: Sentinel for a NULL ``PyObject*`` in a T_OBJECT member (``del pkt.attr``).
NULL = type("NULL", (), {"__repr__": lambda self: "<NULL>", "__slots__": ()})()

_DEPRECATED_INT = ("an integer is required (got type {}).  Implicit conversion to "
                   "integers using __int__ is deprecated, and may be removed in a "
                   "future version of Python.")


#: Source files whose frames count as "C code" for warning attribution.
_SIMULATED_C = {__file__}


def register_simulated_c(filename):
    """Attribute warnings raised from ``filename`` to its Python caller."""
    _SIMULATED_C.add(filename)


#: Called as ``observer(category, message, filename, lineno)`` for every warning
#: the simulated C code emits (the job result lists them; set by fdsim.jobrun).
warning_observer = None


def warn(message, category=RuntimeWarning):
    """``PyErr_WarnEx(category, message, 1)``: attributed to the Python frame that
    made the C call (the plugin line doing the assignment), not to this module."""
    frame = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename in _SIMULATED_C:
        frame = frame.f_back
        level += 1
    if warning_observer is not None and frame is not None:
        warning_observer(category, message, frame.f_code.co_filename, frame.f_lineno)
    warnings.warn(message, category, stacklevel=level)


def _type_name(value):
    return type(value).__name__


def as_long(value):
    """``PyLong_AsLong`` of the running CPython (range of a 64-bit C long)."""
    if isinstance(value, int):
        number = int(value)
    elif PY >= (3, 10):
        number = operator.index(value)  # "'float' object cannot be interpreted as an integer"
    elif PY >= (3, 8):
        if hasattr(type(value), "__index__"):
            number = operator.index(value)
        elif hasattr(type(value), "__int__"):
            warn(_DEPRECATED_INT.format(_type_name(value)), DeprecationWarning)
            number = int(value)
        else:
            raise TypeError("an integer is required (got type %s)" % _type_name(value))
    else:
        if not hasattr(type(value), "__int__"):
            raise TypeError("an integer is required (got type %s)" % _type_name(value))
        number = int(value)
    if not -2 ** 63 <= number < 2 ** 63:
        raise OverflowError("Python int too large to convert to C long")
    return number


def as_long_long(value):
    """``PyLong_AsLongLong``: like :func:`as_long` with its own overflow text."""
    try:
        return as_long(value)
    except OverflowError:
        raise OverflowError("int too big to convert")


def _as_index(value):
    """``_PyNumber_Index`` (3.13 structmember)."""
    return operator.index(value)


def signed(value, bits):
    """The two's-complement reading of the low ``bits`` of ``value``."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Member(object):
    """One ``PyMemberDef`` entry; ``slot`` is its index in the instance storage."""

    __slots__ = ("name", "slot")
    kind = None

    def __init__(self, name, slot):
        self.name = name
        self.slot = slot

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return self.to_python(obj._fdsim_c[self.slot])

    def __set__(self, obj, value):
        self.assign(obj._fdsim_c, value)

    def __delete__(self, obj):
        raise TypeError("can't delete numeric/char attribute")

    def to_python(self, cvalue):
        return cvalue

    def assign(self, storage, value):
        raise NotImplementedError


class UInt(Member):
    """T_UINT: C ``unsigned int``."""
    kind = "T_UINT"

    def assign(self, storage, value):
        if PY >= (3, 13):
            number = _as_index(value)
            if number < 0:
                number = as_long(number)
                storage[self.slot] = number & 0xFFFFFFFF
                warn("Writing negative value into unsigned field")
                return
            if number > 2 ** 64 - 1:
                raise OverflowError("Python int too large to convert to C unsigned long")
            storage[self.slot] = number & 0xFFFFFFFF
            if number > 0xFFFFFFFF:
                warn("Truncation of value to unsigned int")
            return
        # <= 3.12: PyLong_AsUnsignedLong, and on failure "for compatibility"
        # PyLong_AsLong -- which is how a float gets in on 3.6-3.9, with the
        # misleading "negative value" warning.
        if isinstance(value, int) and 0 <= value <= 2 ** 64 - 1:
            unsigned_long = int(value)
            storage[self.slot] = unsigned_long & 0xFFFFFFFF
        else:
            unsigned_long = as_long(value) & (2 ** 64 - 1)
            storage[self.slot] = unsigned_long & 0xFFFFFFFF
            warn("Writing negative value into unsigned field")
        if unsigned_long > 0xFFFFFFFF:
            warn("Truncation of value to unsigned int")


class UShort(Member):
    """T_USHORT: C ``unsigned short``."""
    kind = "T_USHORT"

    def assign(self, storage, value):
        number = as_long(value)
        storage[self.slot] = number & 0xFFFF
        if number > 0xFFFF or number < 0:
            warn("Truncation of value to unsigned short")


class Int(Member):
    """T_INT: C ``int``."""
    kind = "T_INT"

    def assign(self, storage, value):
        number = as_long(value)
        storage[self.slot] = signed(number, 32)
        if not -2 ** 31 <= number < 2 ** 31:
            warn("Truncation of value to int")


class Long(Member):
    """T_LONG: C ``long`` (64 bit).  ``PyLong_AsLong`` writes the field before
    checking for an error, so a failed assignment leaves -1 behind."""
    kind = "T_LONG"

    def assign(self, storage, value):
        try:
            storage[self.slot] = as_long(value)
        except Exception:
            storage[self.slot] = -1
            raise


class LongLong(Member):
    """T_LONGLONG: C ``long long``; -1 left behind on error like T_LONG."""
    kind = "T_LONGLONG"

    def assign(self, storage, value):
        try:
            storage[self.slot] = as_long_long(value)
        except Exception:
            storage[self.slot] = -1
            raise


class ULongLong(Member):
    """T_ULONGLONG: C ``unsigned long long``."""
    kind = "T_ULONGLONG"

    def assign(self, storage, value):
        if PY >= (3, 13):
            number = _as_index(value)
            if number < 0:
                storage[self.slot] = as_long(number) & (2 ** 64 - 1)
                warn("Writing negative value into unsigned field")
            elif number > 2 ** 64 - 1:
                raise OverflowError("int too big to convert")
            else:
                storage[self.slot] = number
            return
        # <= 3.12: the result of the conversion is stored before the error
        # check, so a failed assignment leaves (unsigned long long)-1.
        try:
            if isinstance(value, int):
                if value < 0:
                    raise OverflowError("can't convert negative int to unsigned")
                if value > 2 ** 64 - 1:
                    raise OverflowError("int too big to convert")
                storage[self.slot] = int(value)
            else:
                storage[self.slot] = as_long(value) & (2 ** 64 - 1)
        except Exception:
            storage[self.slot] = 2 ** 64 - 1
            raise


class Bool(Member):
    """T_BOOL: only ``True``/``False``."""
    kind = "T_BOOL"

    def assign(self, storage, value):
        if not isinstance(value, bool):
            raise TypeError("attribute value type must be bool")
        storage[self.slot] = value


class String(Member):
    """T_STRING without READONLY: the core sets a ``char*``; Python can only read
    it (strict UTF-8 decode, NULL reads as None)."""
    kind = "T_STRING"

    def to_python(self, cvalue):
        if cvalue is None:
            return None
        return cvalue.decode("utf-8")

    def assign(self, storage, value):
        raise TypeError("readonly attribute")


class Object(Member):
    """T_OBJECT: anything goes; ``del`` stores NULL, which reads as None."""
    kind = "T_OBJECT"

    def to_python(self, cvalue):
        return None if cvalue is NULL else cvalue

    def assign(self, storage, value):
        storage[self.slot] = value

    def __delete__(self, obj):
        obj._fdsim_c[self.slot] = NULL


def c_get(obj, name):
    """The C value of member ``name`` (what the core reads)."""
    return obj._fdsim_c[type(obj)._fdsim_index[name]]


def c_set(obj, name, cvalue):
    """Store a C value in member ``name`` (what the core writes)."""
    obj._fdsim_c[type(obj)._fdsim_index[name]] = cvalue


def make_type(type_name, exported_name, members, init, repr_fn, module="bareosfd"):
    """Build a packet class: no ``__dict__`` (unknown attributes raise
    AttributeError), one descriptor per member, ``init(self, *args, **kw)`` as
    constructor body and ``repr_fn`` as ``__repr__``.

    ``members`` is a list of ``(name, MemberClass, default_c_value)``.
    """
    descriptors = []
    namespace = {"__slots__": ("_fdsim_c",), "__module__": module}
    defaults = []
    for slot, (name, kind, default) in enumerate(members):
        descriptor = kind(name, slot)
        descriptors.append(descriptor)
        namespace[name] = descriptor
        defaults.append(default)

    def __init__(self, *args, **kwargs):
        self._fdsim_c = list(defaults)
        init(self, *args, **kwargs)

    namespace["__init__"] = __init__
    namespace["__repr__"] = repr_fn
    namespace["_fdsim_index"] = {d.name: d.slot for d in descriptors}
    cls = type(type_name, (object,), namespace)
    cls._fdsim_exported_name = exported_name
    return cls
