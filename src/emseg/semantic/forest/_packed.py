"""A fitted random forest as plain arrays, and its prediction.

Every tree of a scikit-learn ``RandomForestClassifier`` is copied into five
arrays concatenated over trees (child indices made global): this is what a
model file stores (no pickle). :meth:`PackedForest.predict_proba` evaluates
them with one of two engines, both equal to
``RandomForestClassifier.predict_proba`` (same per-tree normalised leaf
values, summed in tree order, divided by the number of trees):

- ``"sklearn"`` (default): the validated arrays are written into
  scikit-learn's own compiled ``Tree`` objects (built from numbers, through
  ``Tree.__setstate__`` with a node array we fill field by field, never by
  unpickling), whose GIL-free Cython traversal is the fastest we measured
  (``benchmarks/bench_forest.py``);
- ``"numba"``: a ``nogil`` numba kernel over the packed arrays (no
  scikit-learn needed at prediction time).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np

from emseg._checks import check_choice
from emseg.errors import EmsegValueError, FormatError

Engine = Literal["sklearn", "numba"]
ENGINES: tuple[str, ...] = ("sklearn", "numba")


@numba.njit(nogil=True, cache=True)
def _predict_kernel(
    x: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - numba
    # samples in chunks, trees outer within a chunk: one tree's nodes stay in
    # cache while a chunk of samples walks it; per sample the trees are still
    # summed in order 0..T-1 (the same sum as scikit-learn's)
    n_trees = roots.shape[0]
    n_classes = value.shape[1]
    n = x.shape[0]
    chunk = 2048
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        for i in range(start, stop):
            for c in range(n_classes):
                out[i, c] = 0.0
        for t in range(n_trees):
            root = roots[t]
            for i in range(start, stop):
                node = root
                while left[node] >= 0:
                    if x[i, feature[node]] <= threshold[node]:
                        node = left[node]
                    else:
                        node = right[node]
                for c in range(n_classes):
                    out[i, c] += value[node, c]
        for i in range(start, stop):
            for c in range(n_classes):
                out[i, c] /= n_trees


@dataclass(frozen=True, eq=False)
class PackedForest:
    """The trees of a fitted forest as concatenated arrays.

    Attributes
    ----------
    left, right : (N,) int32
        Global index of each node's children; -1 at leaves.
    feature : (N,) int32
        Feature compared at each node (-2 at leaves, as scikit-learn).
    threshold : (N,) float64
        Go left when ``x[feature] <= threshold``.
    value : (N, C) float64
        Class fractions at each node (rows sum to 1 at leaves).
    roots : (T,) int64
        Index of each tree's root.
    n_features : int
        Number of features the forest expects.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    n_features: int

    @property
    def n_classes(self) -> int:
        return int(self.value.shape[1])

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @classmethod
    def from_sklearn(cls, forest: Any) -> PackedForest:
        """Copy the trees of a fitted ``RandomForestClassifier`` (single output)."""
        lefts, rights, feats, thrs, vals, roots = [], [], [], [], [], []
        offset = 0
        for est in forest.estimators_:
            tree = est.tree_
            n = int(tree.node_count)
            left = tree.children_left.astype(np.int64)
            right = tree.children_right.astype(np.int64)
            lefts.append(np.where(left >= 0, left + offset, -1))
            rights.append(np.where(right >= 0, right + offset, -1))
            feats.append(tree.feature.astype(np.int32))
            thrs.append(tree.threshold.astype(np.float64))
            v = tree.value[:, 0, :].astype(np.float64)
            norm = v.sum(axis=1, keepdims=True)
            norm[norm == 0] = 1.0
            vals.append(v / norm)
            roots.append(offset)
            offset += n
        packed = cls(
            left=np.concatenate(lefts).astype(np.int32),
            right=np.concatenate(rights).astype(np.int32),
            feature=np.concatenate(feats),
            threshold=np.concatenate(thrs),
            value=np.ascontiguousarray(np.concatenate(vals)),
            roots=np.asarray(roots, dtype=np.int64),
            n_features=int(forest.n_features_in_),
        )
        packed.validate()
        return packed

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store (names are the model file's tensor names)."""
        return {
            "left": self.left,
            "right": self.right,
            "feature": self.feature,
            "threshold": self.threshold,
            "value": self.value,
            "roots": self.roots,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_features: int) -> PackedForest:
        """Rebuild from :meth:`arrays`, validating everything (see :meth:`validate`)."""
        try:
            packed = cls(
                left=np.ascontiguousarray(arrays["left"], dtype=np.int32),
                right=np.ascontiguousarray(arrays["right"], dtype=np.int32),
                feature=np.ascontiguousarray(arrays["feature"], dtype=np.int32),
                threshold=np.ascontiguousarray(arrays["threshold"], dtype=np.float64),
                value=np.ascontiguousarray(arrays["value"], dtype=np.float64),
                roots=np.ascontiguousarray(arrays["roots"], dtype=np.int64),
                n_features=int(n_features),
            )
        except KeyError as exc:
            raise FormatError(f"the model file lacks the forest array {exc}.") from None
        packed.validate()
        return packed

    def validate(self) -> None:
        """Check that traversal stays inside the arrays and ends (children after parents).

        Raises
        ------
        FormatError
            When the arrays are inconsistent (a corrupt or forged model file).
        """
        n = self.left.shape[0]
        problems = []
        if not (
            self.left.ndim == self.right.ndim == self.feature.ndim == self.threshold.ndim == 1
            and self.right.shape[0] == n
            and self.feature.shape[0] == n
            and self.threshold.shape[0] == n
            and self.value.ndim == 2
            and self.value.shape[0] == n
            and self.value.shape[1] >= 1
            and self.roots.ndim == 1
            and self.roots.shape[0] >= 1
        ):
            problems.append("array shapes do not match")
        else:
            idx = np.arange(n)
            internal = self.left >= 0
            if np.any((self.left >= 0) != (self.right >= 0)):
                problems.append("a node has exactly one child")
            if np.any(self.left[internal] <= idx[internal]) or np.any(
                self.right[internal] <= idx[internal]
            ):
                problems.append("a child does not come after its parent")
            if np.any(self.left >= n) or np.any(self.right >= n):
                problems.append("a child index is out of range")
            f = self.feature[internal]
            if np.any(f < 0) or np.any(f >= self.n_features):
                problems.append("a split feature is out of range")
            if np.any(self.roots < 0) or np.any(self.roots >= n):
                problems.append("a root index is out of range")
            elif self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0):
                problems.append("trees are not stored one after the other from index 0")
            else:
                # every child stays inside its own tree (trees are evaluated one by one)
                end = np.append(self.roots[1:], n)[np.searchsorted(self.roots, idx, "right") - 1]
                if np.any(self.left[internal] >= end[internal]) or np.any(
                    self.right[internal] >= end[internal]
                ):
                    problems.append("a child index leaves its tree")
            if not np.all(np.isfinite(self.value)) or not np.all(
                np.isfinite(self.threshold[internal])
            ):
                problems.append("non-finite values")
        if problems:
            raise FormatError(f"invalid forest in model file: {'; '.join(problems)}.")

    @functools.cached_property
    def _sklearn_trees(self) -> list[Any]:
        """scikit-learn ``Tree`` objects holding this forest's (validated) nodes."""
        from sklearn.tree._tree import NODE_DTYPE, Tree

        n = self.left.shape[0]
        ends = np.append(self.roots[1:], n)
        trees = []
        for a, b in zip(self.roots.tolist(), ends.tolist(), strict=True):
            m = b - a
            nodes = np.zeros(m, dtype=NODE_DTYPE)
            left = self.left[a:b].astype(np.int64)
            right = self.right[a:b].astype(np.int64)
            leaf = left < 0
            nodes["left_child"] = np.where(leaf, -1, left - a)
            nodes["right_child"] = np.where(leaf, -1, right - a)
            nodes["feature"] = np.where(leaf, -2, self.feature[a:b])
            nodes["threshold"] = np.where(leaf, -2.0, self.threshold[a:b])
            nodes["n_node_samples"] = 1
            nodes["weighted_n_node_samples"] = 1.0
            depth = np.zeros(m, dtype=np.int64)
            for i in np.flatnonzero(~leaf):  # children come after parents
                depth[left[i] - a] = depth[right[i] - a] = depth[i] + 1
            tree = Tree(self.n_features, np.array([self.n_classes], dtype=np.intp), 1)
            tree.__setstate__(
                {
                    "max_depth": int(depth.max()),
                    "node_count": m,
                    "nodes": nodes,
                    "values": np.ascontiguousarray(self.value[a:b, None, :], dtype=np.float64),
                }
            )
            trees.append(tree)
        return trees

    def _predict_sklearn(self, x: np.ndarray, out: np.ndarray) -> None:
        out[:] = 0.0
        for tree in self._sklearn_trees:
            out += tree.predict(x)  # rows of normalised leaf values
        out /= self.n_trees

    def _predict_numba(self, x: np.ndarray, out: np.ndarray) -> None:
        _predict_kernel(
            x, self.left, self.right, self.feature, self.threshold, self.value, self.roots, out
        )

    def predict_proba(
        self, x: np.ndarray, *, n_threads: int = 1, engine: Engine = "sklearn"
    ) -> np.ndarray:
        """Class probabilities of samples.

        Parameters
        ----------
        x : (N, F) array_like
            Features (converted to float32, as scikit-learn does).
        n_threads : int, default 1
            Threads splitting the samples (both engines release the GIL).
        engine : {"sklearn", "numba"}, default "sklearn"
            scikit-learn's compiled tree traversal on trees rebuilt from the
            arrays (faster), or emseg's numba kernel (see module docstring).

        Returns
        -------
        (N, C) ndarray of float64
            Equal to scikit-learn's ``predict_proba`` of the original forest
            (up to float64 rounding of the sum, < 1e-12).
        """
        check_choice(engine, ENGINES, name="engine")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise EmsegValueError(
                f"`x` must have shape (n_samples, {self.n_features}); got {x.shape}."
            )
        out = np.empty((x.shape[0], self.n_classes), np.float64)
        run = self._predict_sklearn if engine == "sklearn" else self._predict_numba
        n_threads = max(1, int(n_threads))
        if n_threads == 1 or x.shape[0] < 10_000:
            run(x, out)
            return out
        if engine == "sklearn":
            self._sklearn_trees  # noqa: B018 - build once, before the threads
        bounds = np.linspace(0, x.shape[0], n_threads + 1).astype(int)
        with cf.ThreadPoolExecutor(max_workers=n_threads) as pool:
            futures = [
                pool.submit(run, x[a:b], out[a:b]) for a, b in itertools.pairwise(bounds) if b > a
            ]
            for fut in futures:
                fut.result()
        return out
