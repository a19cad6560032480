"""The structmember emulation behind the packet types (contract §3.6).

``test_assignment_table_row`` checks the table of §3.6 row by row on the running
Python.  ``test_same_as_cpython`` compares every member kind with CPython's own
``PyMemberDef`` implementation (``_testcapi``'s test type) over a matrix of
values: stored value, exception and warnings must be identical.
"""
import sys
import warnings

import pytest

from fdsim import structmember as sm

PY = sys.version_info[:2]
KINDS = {"T_UINT": sm.UInt, "T_USHORT": sm.UShort, "T_INT": sm.Int, "T_LONG": sm.Long,
         "T_LONGLONG": sm.LongLong, "T_ULONGLONG": sm.ULongLong, "T_BOOL": sm.Bool}
Members = sm.make_type("members", "Members", [(n, k, 0) for n, k in KINDS.items()],
                       lambda self: None, object.__repr__)
NEGATIVE = "Writing negative value into unsigned field"


def assign(obj, name, value, start=7):
    """Assign ``value`` after ``start``; return (value after, exception, warnings)."""
    setattr(obj, name, start if name != "T_BOOL" else True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            setattr(obj, name, value)
            error = None
        except Exception as exc:
            error = (type(exc).__name__, str(exc))
    return getattr(obj, name), error, [(w.category.__name__, str(w.message)) for w in caught]


# --- the table of §3.6, row by row ---------------------------------------------------

def test_t_uint_negative_wraps_with_warnings():
    value, error, caught = assign(Members(), "T_UINT", -1)
    assert (value, error) == (2 ** 32 - 1, None)
    expected = [("RuntimeWarning", NEGATIVE)]
    if PY <= (3, 12):
        expected.append(("RuntimeWarning", "Truncation of value to unsigned int"))
    assert caught == expected


def test_t_uint_too_large_is_stored_mod_2_32():
    assert assign(Members(), "T_UINT", 2 ** 32 + 5) == (
        5, None, [("RuntimeWarning", "Truncation of value to unsigned int")])


def test_t_uint_float():
    value, error, caught = assign(Members(), "T_UINT", 1700000000.75)
    if PY >= (3, 10):
        assert (value, error) == (7, ("TypeError", "'float' object cannot be interpreted "
                                                   "as an integer"))
        assert caught == []
    else:
        # accepted (truncated) with the misleading "negative value" warning
        assert (value, error) == (1700000000, None)
        assert ("RuntimeWarning", NEGATIVE) in caught
        assert any(c == "DeprecationWarning" for c, _ in caught) == (PY >= (3, 8))


def test_t_long_negative_is_fine_and_overflow_beyond_64_bit():
    assert assign(Members(), "T_LONG", -5) == (-5, None, [])
    value, error, _ = assign(Members(), "T_LONG", 2 ** 63)
    assert error[0] == "OverflowError"


def test_t_long_float():
    value, error, _ = assign(Members(), "T_LONG", 1.5)
    if PY >= (3, 10):
        assert error[0] == "TypeError" and value == -1  # the field is left at -1
    else:
        assert (value, error) == (1, None)


@pytest.mark.parametrize("value, stored", [(-1, 65535), (70000, 4464)])
def test_t_ushort_truncates_with_warning(value, stored):
    assert assign(Members(), "T_USHORT", value) == (
        stored, None, [("RuntimeWarning", "Truncation of value to unsigned short")])


def test_t_ushort_float():
    value, error, _ = assign(Members(), "T_USHORT", 2.5)
    assert (error is not None) == (PY >= (3, 10))


def test_t_ulonglong_negative():
    value, error, caught = assign(Members(), "T_ULONGLONG", -1)
    if PY >= (3, 13):
        assert (value, error, caught) == (2 ** 64 - 1, None, [("RuntimeWarning", NEGATIVE)])
    else:
        assert error == ("OverflowError", "can't convert negative int to unsigned")


def test_t_ulonglong_too_large_and_float():
    assert assign(Members(), "T_ULONGLONG", 2 ** 64)[1][0] == "OverflowError"
    value, error, _ = assign(Members(), "T_ULONGLONG", 3.5)
    assert (error is not None) == (PY >= (3, 10))


def test_t_int_too_large_truncates_with_warning():
    assert assign(Members(), "T_INT", 2 ** 32 + 3) == (
        3, None, [("RuntimeWarning", "Truncation of value to int")])
    value, error, _ = assign(Members(), "T_INT", 0.5)
    assert (error is not None) == (PY >= (3, 10))


@pytest.mark.parametrize("value", [1, 0, None, "yes", 1.0])
def test_t_bool_accepts_only_true_and_false(value):
    assert assign(Members(), "T_BOOL", value)[1] == ("TypeError",
                                                      "attribute value type must be bool")
    assert assign(Members(), "T_BOOL", False)[:2] == (False, None)


def test_t_string_is_read_only_and_decoded_strictly():
    Strings = sm.make_type("strings", "Strings", [("name", sm.String, None)],
                           lambda self: None, object.__repr__)
    obj = Strings()
    assert obj.name is None  # NULL
    with pytest.raises(TypeError, match="readonly attribute"):
        obj.name = "x"
    sm.c_set(obj, "name", "Über".encode("utf-8"))
    assert obj.name == "Über"
    sm.c_set(obj, "name", b"K\xdcBLER")
    with pytest.raises(UnicodeDecodeError):
        obj.name


def test_t_object_takes_anything_and_del_stores_null():
    Objects = sm.make_type("objects", "Objects", [("link", sm.Object, "")],
                           lambda self: None, object.__repr__)
    obj = Objects()
    obj.link = None
    assert obj.link is None and sm.c_get(obj, "link") is None  # None, not NULL
    del obj.link
    assert obj.link is None and sm.c_get(obj, "link") is sm.NULL
    obj.link = b"bytes are fine here"
    assert obj.link == b"bytes are fine here"


def test_numeric_members_cannot_be_deleted_and_no_new_attributes():
    obj = Members()
    with pytest.raises(TypeError, match="can't delete numeric/char attribute"):
        del obj.T_INT
    with pytest.raises(AttributeError):
        obj.atime = 1


def test_warning_points_at_the_assigning_line():
    obj = Members()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj.T_UINT = -1
    assert {w.filename for w in caught} == {__file__}


# --- identical to CPython's PyMemberDef -------------------------------------------------

VALUES = [0, 1, -1, 7, 2 ** 15, 2 ** 16 + 1, -2 ** 15 - 1, 2 ** 31, -2 ** 31 - 1, 2 ** 32 + 1,
          -2 ** 40, 2 ** 63 - 1, 2 ** 63, -2 ** 63, -2 ** 63 - 1, 2 ** 64 - 1, 2 ** 64,
          1.5, -1.5, 5e9, True, False, None, "3", b"3"]


def _cpython_type():
    testcapi = pytest.importorskip("_testcapi", reason="_testcapi is not built into this "
                                                       "Python; the table tests above still run")
    return getattr(testcapi, "_test_structmembersType_OldAPI", None) or getattr(
        testcapi, "_test_structmembersType")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_as_cpython(kind):
    reference = _cpython_type()
    mismatches = []
    for value in VALUES:
        ours = assign(Members(), kind, value)
        theirs = assign(reference(), kind, value)
        if ours != theirs:
            mismatches.append((value, ours, theirs))
    assert mismatches == []
