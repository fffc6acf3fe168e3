"""Eigenvalues of symmetric 2x2 and 3x3 matrix fields, closed form, in numba.

The matrices come as their unique entries, one flat float32 array each
(``(yy, yx, xx)`` in 2D, ``(zz, zy, zx, yy, yx, xx)`` in 3D); eigenvalues
are returned in decreasing order (as :func:`skimage.feature.hessian_matrix_eigvals`).
The kernels release the GIL so that several run at once on threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _eig2_kernel(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - numba
    for i in range(a.shape[0]):
        aa = np.float64(a[i])
        bb = np.float64(b[i])
        cc = np.float64(c[i])
        mean = 0.5 * (aa + cc)
        diff = 0.5 * (aa - cc)
        root = math.sqrt(diff * diff + bb * bb)
        out[0, i] = mean + root
        out[1, i] = mean - root


@numba.njit(nogil=True, cache=True)
def _eig3_kernel(
    a11: np.ndarray,
    a12: np.ndarray,
    a13: np.ndarray,
    a22: np.ndarray,
    a23: np.ndarray,
    a33: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - numba
    third = 1.0 / 3.0
    for i in range(a11.shape[0]):
        m11 = np.float64(a11[i])
        m12 = np.float64(a12[i])
        m13 = np.float64(a13[i])
        m22 = np.float64(a22[i])
        m23 = np.float64(a23[i])
        m33 = np.float64(a33[i])
        q = (m11 + m22 + m33) * third
        b11 = m11 - q
        b22 = m22 - q
        b33 = m33 - q
        p1 = m12 * m12 + m13 * m13 + m23 * m23
        p2 = b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1
        if p2 <= 1e-300:
            out[0, i] = q
            out[1, i] = q
            out[2, i] = q
            continue
        p = math.sqrt(p2 / 6.0)
        inv = 1.0 / p
        c11 = b11 * inv
        c22 = b22 * inv
        c33 = b33 * inv
        c12 = m12 * inv
        c13 = m13 * inv
        c23 = m23 * inv
        det = (
            c11 * (c22 * c33 - c23 * c23)
            - c12 * (c12 * c33 - c23 * c13)
            + c13 * (c12 * c23 - c22 * c13)
        )
        r = 0.5 * det
        if r <= -1.0:
            phi = math.pi / 3.0
        elif r >= 1.0:
            phi = 0.0
        else:
            phi = math.acos(r) / 3.0
        e1 = q + 2.0 * p * math.cos(phi)
        e3 = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
        e2 = 3.0 * q - e1 - e3
        out[0, i] = e1
        out[1, i] = e2
        out[2, i] = e3


def symmetric_eigenvalues(entries: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues (decreasing) of a field of symmetric matrices given by their unique entries.

    Parameters
    ----------
    entries : list of 3 (2D) or 6 (3D) arrays of one shape S
        Upper-triangle entries in row order: ``(a11, a12, a22)`` or
        ``(a11, a12, a13, a22, a23, a33)``.
    out : (D, *S) float32 ndarray, optional
        Where to write.

    Returns
    -------
    (D, *S) ndarray of float32
        ``out[0] >= out[1] (>= out[2])`` everywhere (computed in float64).
    """
    shape = entries[0].shape
    flat = [np.ascontiguousarray(e, dtype=np.float32).reshape(-1) for e in entries]
    dim = {3: 2, 6: 3}[len(entries)]
    if out is None:
        out = np.empty((dim, *shape), np.float32)
    view = out.reshape(dim, -1)
    if dim == 2:
        _eig2_kernel(flat[0], flat[1], flat[2], view)
    else:
        _eig3_kernel(flat[0], flat[1], flat[2], flat[3], flat[4], flat[5], view)
    return out
