import numpy as np
import pytest

from emseg._checks import (
    check_choice,
    check_label_dtype,
    check_same_shape,
    parse_shape,
    parse_spacing,
)
from emseg.errors import EmsegError, EmsegTypeError, EmsegValueError


def test_parse_spacing_forms():
    assert parse_spacing(None, 3) == (1.0, 1.0, 1.0)
    assert parse_spacing(4, 2) == (4.0, 4.0)
    assert parse_spacing((40, 4, 4.5), 3) == (40.0, 4.0, 4.5)
    assert parse_spacing(np.array([50.0, 4.0, 4.0]), 3) == (50.0, 4.0, 4.0)


def test_parse_spacing_wrong_length():
    with pytest.raises(EmsegValueError, match=r"must have 3 entries.*got \(4.0, 4.0\)"):
        parse_spacing((4.0, 4.0), 3)


@pytest.mark.parametrize("bad", [(0, 4, 4), (-1, 4, 4), (float("nan"), 4, 4), (float("inf"), 1, 1)])
def test_parse_spacing_non_positive(bad):
    with pytest.raises(EmsegValueError, match="positive and finite"):
        parse_spacing(bad, 3)


def test_parse_spacing_not_numbers():
    with pytest.raises(EmsegTypeError):
        parse_spacing(("a", 1, 1), 3)
    with pytest.raises(EmsegTypeError):
        parse_spacing(object(), 3)


def test_errors_are_builtins():
    assert issubclass(EmsegValueError, ValueError)
    assert issubclass(EmsegValueError, EmsegError)
    assert issubclass(EmsegTypeError, TypeError)


def test_shape_and_dtype_checks():
    assert parse_shape([2, 3]) == (2, 3)
    with pytest.raises(EmsegValueError, match="positive"):
        parse_shape([2, 0])
    with pytest.raises(EmsegValueError, match="same shape"):
        check_same_shape(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(EmsegTypeError, match="integer label array"):
        check_label_dtype(np.zeros(3, dtype=np.float32))
    check_label_dtype(np.zeros(3, dtype=np.uint64))
    with pytest.raises(EmsegValueError, match="'a', 'b'"):
        check_choice("c", ["a", "b"], name="method")
