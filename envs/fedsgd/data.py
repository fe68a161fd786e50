"""Writer-partitioned image data for the FedSGD game (SPEC §2, §6): one writer = one client.

Three sources, one structure (:class:`FederatedDataset`):

* :func:`load_leaf_femnist` reads FEMNIST in LEAF's JSON layout from a local folder (nothing is downloaded);
  :func:`write_leaf_json` writes any 28x28 :class:`FederatedDataset` in that layout (tests round-trip through it).
* :func:`synthetic_femnist` is the offline default: 62 classes (``0-9``, ``A-Z``, ``a-z``) rendered from the
  DejaVu Sans font that ships with matplotlib, every writer with its own style (slant, rotation, scale, aspect,
  stroke width, shakiness, ink level), its own class mix (Dirichlet) and a heavy-tailed (clipped lognormal)
  number of samples; deterministic by seed.
* :func:`digits_federated` partitions scikit-learn's bundled 8x8 digits by Dirichlet label skew or by
  "pseudo-writer" (regions of a style space, so each writer's images look alike): small real data for tests.

Conventions (all sources): ``x`` is ``float32`` of shape ``(n, H, W)`` in ``[0, 1]`` with **ink = 1 and
background = 0** (the MNIST convention, the one a CNN with zero padding wants). LEAF stores the reverse (white
background ~1.0, ink ~0), so :func:`load_leaf_femnist` returns ``1 - x`` and :func:`write_leaf_json` writes
``1 - x``. Labels ``y`` are ``int64``: FEMNIST ``0-9`` digits, ``10-35`` upper case, ``36-61`` lower case
(:data:`FEMNIST_CLASSES` spells them). ``writer`` is the ``int64`` index of each sample's writer into
``writer_ids``.

Only numpy and the standard library are imported here; matplotlib (font rendering, PNG grids) and scikit-learn
(the digits) are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgames.validation import integer, real

__all__ = [
    "FEMNIST_CLASSES",
    "FederatedDataset",
    "digits_federated",
    "load_leaf_femnist",
    "save_sample_grid",
    "synthetic_femnist",
    "write_leaf_json",
]

#: The 62 FEMNIST classes in label order: ``FEMNIST_CLASSES[y]`` is the character of label ``y``.
FEMNIST_CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
N_FEMNIST_CLASSES = len(FEMNIST_CLASSES)
LEAF_SIDE = 28
LEAF_PIXELS = LEAF_SIDE * LEAF_SIDE


def _seed(value: object) -> int:
    return integer("seed", value, 0)


# ---------------------------------------------------------------------------------------------------------------
# The common structure
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Images partitioned by writer (one writer = one FL client).

    Attributes:
        x: ``(n, H, W)`` ``float32`` images in ``[0, 1]``, ink 1 on background 0.
        y: ``(n,)`` ``int64`` labels in ``[0, n_classes)``.
        writer: ``(n,)`` ``int64`` index of each sample's writer into ``writer_ids``.
        n_classes: number of classes (62 for FEMNIST, 10 for digits); not every class need be present.
        writer_ids: the writers' names (unique); writers may hold no sample (e.g. in a small test split).

    The arrays are converted to those dtypes on construction and validated (shapes, ranges). ``eq`` is off
    (arrays do not compare to a bool); the dataclass is frozen, the arrays themselves are not made read-only.
    """

    x: np.ndarray
    y: np.ndarray
    writer: np.ndarray
    n_classes: int
    writer_ids: list[str]

    def __post_init__(self) -> None:
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"x must have shape (n, height, width), got shape {x.shape}")
        n = x.shape[0]
        if n:
            lo, hi = float(x.min()), float(x.max())
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(f"x must hold finite values in [0, 1], got min {lo} and max {hi}")
        n_classes = integer("n_classes", self.n_classes, 1)
        try:
            ids = None if isinstance(self.writer_ids, str) else [str(w) for w in self.writer_ids]
        except TypeError:
            ids = None
        if not ids:
            raise ValueError(f"writer_ids must be a non-empty list of names, got {self.writer_ids!r}")
        if len(set(ids)) != len(ids):
            dup = sorted({w for w in ids if ids.count(w) > 1})[:5]
            raise ValueError(f"writer_ids must be unique, got duplicates {dup}")
        y = _int_array("y", self.y, n, 0, n_classes - 1)
        writer = _int_array("writer", self.writer, n, 0, len(ids) - 1)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "writer", writer)
        object.__setattr__(self, "n_classes", n_classes)
        object.__setattr__(self, "writer_ids", ids)

    # -- sizes ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_samples(self) -> int:
        """Total number of samples."""
        return len(self)

    @property
    def n_writers(self) -> int:
        """Number of writers (clients), including any without samples."""
        return len(self.writer_ids)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image."""
        return (int(self.x.shape[1]), int(self.x.shape[2]))

    @property
    def num_samples(self) -> np.ndarray:
        """``(n_writers,)`` ``int64`` number of samples of each writer (LEAF's ``num_samples``)."""
        return np.bincount(self.writer, minlength=self.n_writers).astype(np.int64)

    # -- views ---------------------------------------------------------------------------------------------------

    def clients(self) -> list[np.ndarray]:
        """One ``int64`` array of sample indices per writer, in ``writer_ids`` order (ascending indices)."""
        order = np.argsort(self.writer, kind="stable")
        return np.split(order, np.cumsum(self.num_samples)[:-1])

    def class_counts(self) -> np.ndarray:
        """``(n_writers, n_classes)`` ``int64`` matrix: how many samples of each class each writer holds."""
        counts = np.zeros((self.n_writers, self.n_classes), dtype=np.int64)
        np.add.at(counts, (self.writer, self.y), 1)
        return counts

    def take(self, indices: Sequence[int] | np.ndarray) -> FederatedDataset:
        """The samples at ``indices`` (in that order), keeping every writer (same ``writer_ids``)."""
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-d array of integers, got dtype {idx.dtype} shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}], got min {idx.min()} max {idx.max()}")
        return FederatedDataset(self.x[idx], self.y[idx], self.writer[idx], self.n_classes, list(self.writer_ids))

    def split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[FederatedDataset, FederatedDataset]:
        """Split every writer's samples at random into ``(train, test)``, like LEAF's per-user split.

        Each writer with ``n`` samples puts ``round(test_fraction * n)`` of them (halves rounded up) in the test
        set, but always keeps at least one in training, so every writer with data is a training client. Both
        parts keep all ``writer_ids`` in the same order (writer ``i`` of ``test`` is writer ``i`` of ``train``);
        a writer may hold no test sample. ``test_fraction`` in ``[0, 1)``; deterministic by ``seed``.
        """
        frac = real("test_fraction", test_fraction, 0.0, 1.0, strict_maximum=True)
        rng = np.random.default_rng(_seed(seed))
        train, test = [], []
        for idx in self.clients():
            n = len(idx)
            n_test = min(int(math.floor(frac * n + 0.5)), max(n - 1, 0))
            perm = rng.permutation(idx)
            test.append(np.sort(perm[:n_test]))
            train.append(np.sort(perm[n_test:]))
        empty = np.zeros(0, dtype=np.int64)
        return (
            self.take(np.concatenate(train) if train else empty),
            self.take(np.concatenate(test) if test else empty),
        )

    def subset(self, writers: Iterable[int | str] | int | str) -> FederatedDataset:
        """The data of the given writers only (indices into ``writer_ids`` or names), renumbered ``0..k-1`` in
        the order given; samples keep their relative order."""
        if isinstance(writers, (str, int, np.integer)):
            writers = [writers]
        lookup = {w: i for i, w in enumerate(self.writer_ids)}
        chosen: list[int] = []
        for w in writers:
            if isinstance(w, str):
                if w not in lookup:
                    raise ValueError(f"writers: unknown writer id {w!r}")
                chosen.append(lookup[w])
            elif isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)):
                if not 0 <= w < self.n_writers:
                    raise ValueError(f"writers: index {int(w)} out of range [0, {self.n_writers - 1}]")
                chosen.append(int(w))
            else:
                raise ValueError(f"writers must hold writer indices or writer_ids, got {w!r}")
        if not chosen:
            raise ValueError("writers must name at least one writer, got none")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"writers must not repeat a writer, got {list(writers)!r}")
        new_index = np.full(self.n_writers, -1, dtype=np.int64)
        new_index[chosen] = np.arange(len(chosen))
        sel = np.flatnonzero(new_index[self.writer] >= 0)
        return FederatedDataset(
            self.x[sel], self.y[sel], new_index[self.writer[sel]], self.n_classes, [self.writer_ids[i] for i in chosen]
        )

    def summary(self) -> dict[str, object]:
        """Plain-python summary: writers, samples, classes, classes present, image shape, samples per writer."""
        counts = self.num_samples
        return {
            "writers": self.n_writers,
            "samples": self.n_samples,
            "classes": self.n_classes,
            "classes_present": int(np.unique(self.y).size),
            "image_shape": self.image_shape,
            "samples_per_writer_min": int(counts.min()),
            "samples_per_writer_median": float(np.median(counts)),
            "samples_per_writer_max": int(counts.max()),
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"FederatedDataset(writers={s['writers']}, samples={s['samples']}, classes={s['classes']}, "
            f"image_shape={s['image_shape']}, samples_per_writer min/median/max="
            f"{s['samples_per_writer_min']}/{s['samples_per_writer_median']:g}/{s['samples_per_writer_max']})"
        )


def _int_array(name: str, value: object, n: int, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one entry per image), got shape {a.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if a.dtype == bool or not np.issubdtype(a.dtype, np.floating) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < lo or a.max() > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got min {a.min()} and max {a.max()}")
    return a


# ---------------------------------------------------------------------------------------------------------------
# LEAF's JSON layout
# ---------------------------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list[object]:
    """``all_data_2.json`` before ``all_data_10.json`` (LEAF's own numbering order)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def load_leaf_femnist(folder: str | Path, max_writers: int | None = None) -> FederatedDataset:
    """Read FEMNIST from LEAF's JSON files in ``folder`` (e.g. LEAF's ``data/femnist/data/train``).

    Every ``*.json`` file of the folder (not its sub-folders) is read, in natural name order, and must be
    ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [[784 floats]], "y": [ints]}}}``
    (other top-level keys, e.g. ``hierarchies``, are ignored). Writers keep the order of ``users`` within a file.
    ``x`` must lie in ``[0, 1]`` with LEAF's *white* background (~1.0); it is returned **inverted** (``1 - x``,
    ink 1 on background 0, see the module docstring) as ``(n, 28, 28)`` ``float32``. ``y`` must lie in
    ``0..61``. ``max_writers`` (``None`` = all) stops reading after that many writers.

    Files are parsed one at a time (peak memory about one file's Python objects, ~0.6 GB for a full LEAF file
    of 100 writers) and kept as ``float32``.

    Raises ``ValueError`` for a missing folder, a folder without JSON files, a writer listed twice, and any
    malformed file (the message names the file, the key and, where it applies, the user).
    """
    path = Path(folder)
    if not path.exists():
        raise ValueError(f"folder {str(path)!r} does not exist (point it at a folder of LEAF FEMNIST *.json files)")
    if not path.is_dir():
        raise ValueError(f"folder {str(path)!r} is not a directory")
    limit = None if max_writers is None else integer("max_writers", max_writers, 1)
    files = sorted((p for p in path.glob("*.json") if p.is_file()), key=_natural_key)
    if not files:
        raise ValueError(f"folder {str(path)!r} contains no *.json files (expected LEAF's FEMNIST layout)")

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ids: list[str] = []
    seen: dict[str, str] = {}
    for file in files:
        if limit is not None and len(ids) >= limit:
            break
        for user, x, y in _read_leaf_file(file):
            if user in seen:
                raise ValueError(f"{file}: user {user!r} is also in {seen[user]} (a writer may appear only once)")
            seen[user] = file.name
            ids.append(user)
            xs.append(x)
            ys.append(y)
            if limit is not None and len(ids) >= limit:
                break
    counts = [len(y) for y in ys]
    x = np.concatenate(xs) if xs else np.zeros((0, LEAF_PIXELS), dtype=np.float32)
    ink = np.subtract(1.0, x, dtype=np.float32).reshape(-1, LEAF_SIDE, LEAF_SIDE)
    np.clip(ink, 0.0, 1.0, out=ink)
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    writer = np.repeat(np.arange(len(ids), dtype=np.int64), counts)
    return FederatedDataset(ink, y, writer, N_FEMNIST_CLASSES, ids)


def _read_leaf_file(file: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{file}: top level must be an object with keys 'users', 'num_samples', 'user_data', "
            f"got {type(data).__name__}"
        )
    for key in ("users", "num_samples", "user_data"):
        if key not in data:
            raise ValueError(f"{file}: missing key {key!r} (LEAF layout: 'users', 'num_samples', 'user_data')")
    users, num_samples, user_data = data["users"], data["num_samples"], data["user_data"]
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise ValueError(f"{file}: key 'users' must be a list of strings")
    if len(set(users)) != len(users):
        raise ValueError(f"{file}: key 'users' lists a user twice")
    if not isinstance(num_samples, list) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in num_samples
    ):
        raise ValueError(f"{file}: key 'num_samples' must be a list of non-negative integers")
    if len(num_samples) != len(users):
        raise ValueError(f"{file}: key 'num_samples' has {len(num_samples)} entries but 'users' has {len(users)}")
    if not isinstance(user_data, dict):
        raise ValueError(f"{file}: key 'user_data' must be an object mapping each user to its 'x' and 'y'")
    extra = set(user_data) - set(users)
    if extra:
        raise ValueError(f"{file}: key 'user_data' has entries for users not listed in 'users': {sorted(extra)[:5]}")
    out = []
    for user, n in zip(users, num_samples):
        entry = user_data.get(user)
        where = f"{file}: user_data[{user!r}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is missing or not an object with keys 'x' and 'y'")
        for key in ("x", "y"):
            if key not in entry or not isinstance(entry[key], list):
                raise ValueError(f"{where}: key {key!r} is missing or not a list")
        if len(entry["x"]) != n or len(entry["y"]) != n:
            raise ValueError(
                f"{file}: num_samples says {n} for user {user!r}, but user_data has "
                f"{len(entry['x'])} 'x' rows and {len(entry['y'])} 'y' labels"
            )
        try:
            x = np.asarray(entry["x"], dtype=np.float32) if n else np.zeros((0, LEAF_PIXELS), np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: key 'x' must be a list of {LEAF_PIXELS}-number rows") from None
        if x.shape != (n, LEAF_PIXELS):
            raise ValueError(f"{where}: key 'x' must hold rows of {LEAF_PIXELS} numbers (28x28), got shape {x.shape}")
        if n:
            lo, hi = float(x.min()), float(x.max())
            if not (lo >= -1e-6 and hi <= 1.0 + 1e-6):
                raise ValueError(f"{where}: key 'x' must hold finite values in [0, 1], got min {lo} max {hi}")
        y_raw = entry["y"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in y_raw):
            raise ValueError(f"{where}: key 'y' must hold integer labels")
        y = np.asarray(y_raw, dtype=np.int64).reshape(n)
        if n and (y.min() < 0 or y.max() >= N_FEMNIST_CLASSES):
            raise ValueError(
                f"{where}: key 'y' must hold labels in [0, {N_FEMNIST_CLASSES - 1}], got min {y.min()} max {y.max()}"
            )
        out.append((user, x, y))
    return out


def write_leaf_json(
    dataset: FederatedDataset, folder: str | Path, writers_per_file: int = 100, overwrite: bool = False
) -> list[Path]:
    """Write a 28x28 ``dataset`` in LEAF's layout: ``all_data_0.json``, ``all_data_1.json``, ... in ``folder``
    (created if needed), ``writers_per_file`` writers each (LEAF uses at most 100), pixels stored as ``1 - x``
    (LEAF's white background), values written exactly (float32 round-trips). Refuses a folder that already
    holds ``*.json`` files unless ``overwrite`` (then same-named files are replaced, others are left alone,
    and :func:`load_leaf_femnist` would read them too). Samples are written grouped by writer, so reading back
    gives the same dataset when its samples were stored writer by writer (as every loader here stores them).
    Returns the paths written."""
    if not isinstance(dataset, FederatedDataset):
        raise ValueError(f"dataset must be a FederatedDataset, got {type(dataset).__name__}")
    if dataset.image_shape != (LEAF_SIDE, LEAF_SIDE):
        raise ValueError(f"dataset must hold 28x28 images for LEAF's layout, got {dataset.image_shape}")
    per_file = integer("writers_per_file", writers_per_file, 1)
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"folder {str(path)!r} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    if not overwrite and any(path.glob("*.json")):
        raise ValueError(f"folder {str(path)!r} already holds *.json files; pass overwrite=True or use an empty folder")
    clients = dataset.clients()
    written = []
    for k, start in enumerate(range(0, dataset.n_writers, per_file)):
        chunk = range(start, min(start + per_file, dataset.n_writers))
        users = [dataset.writer_ids[w] for w in chunk]
        user_data = {}
        for w, user in zip(chunk, users):
            idx = clients[w]
            white = np.subtract(1.0, dataset.x[idx], dtype=np.float32).reshape(len(idx), LEAF_PIXELS)
            user_data[user] = {"x": white.tolist(), "y": dataset.y[idx].tolist()}
        doc = {"users": users, "num_samples": [len(clients[w]) for w in chunk], "user_data": user_data}
        out = path / f"all_data_{k}.json"
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
        written.append(out)
    return written


# ---------------------------------------------------------------------------------------------------------------
# Synthetic FEMNIST
# ---------------------------------------------------------------------------------------------------------------

# Geometry, in "frame units": the 28x28 image spans [-1, 1]^2 (y up), so one pixel is 2/28 units.
_PIXEL = 2.0 / LEAF_SIDE
_CAP_HEIGHT = 1.1  # height of a capital letter (16 px; lower case and digits keep the font's proportions)
_GRID = 64  # resolution of the cached signed-distance field of each glyph
_GRID_EXTENT = 1.25  # the field covers [-E, E]^2 (glyphs reach about +-0.75)
_PATH_SIZE = 100.0  # font size at which outlines are flattened to polygons (fine enough)
_EDGE = 1.1  # anti-aliasing ramp width, in output pixels (FEMNIST's edges are soft)
_CTRL = 4  # elastic noise: random displacements on a 4x4 control grid, bilinearly upsampled


@functools.lru_cache(maxsize=1)
def _glyph_table() -> np.ndarray:
    """``(62, G, G)`` ``float32`` signed distance (frame units, negative inside) of each FEMNIST class rendered
    in DejaVu Sans (shipped with matplotlib), each glyph centred on its bounding box, all at one font size.
    Computed once per process from the exact outlines (no rasterisation error); dilation / erosion by ``w``
    is then just a threshold of this field at ``w``."""
    try:
        import matplotlib
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextPath
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency of fedgames
        raise ImportError("synthetic_femnist needs matplotlib (for its bundled DejaVu Sans font)") from exc
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    prop = FontProperties(fname=str(font))
    cap = TextPath((0, 0), "H", size=_PATH_SIZE, prop=prop).get_extents().height
    scale = _CAP_HEIGHT / cap
    axis = np.linspace(-_GRID_EXTENT, _GRID_EXTENT, _GRID)
    gx, gy = np.meshgrid(axis, axis[::-1])  # row 0 = top (y = +E)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    table = np.empty((N_FEMNIST_CLASSES, _GRID, _GRID), dtype=np.float32)
    for c, ch in enumerate(FEMNIST_CLASSES):
        tp = TextPath((0, 0), ch, size=_PATH_SIZE, prop=prop)
        polys = [q for q in (np.asarray(p, dtype=np.float64) for p in tp.to_polygons(closed_only=True)) if len(q) >= 3]
        allpts = np.concatenate(polys)
        centre = (allpts.min(axis=0) + allpts.max(axis=0)) / 2
        a_list, b_list = [], []
        for p in polys:
            p = (p - centre) * scale
            if np.allclose(p[0], p[-1]):
                p = p[:-1]
            a_list.append(p)
            b_list.append(np.roll(p, -1, axis=0))
        a, b = np.concatenate(a_list), np.concatenate(b_list)
        keep = np.any(a != b, axis=1)
        table[c] = _signed_distance(points, a[keep], b[keep]).reshape(_GRID, _GRID)
    return table


def _signed_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 48) -> np.ndarray:
    """Distance from each point to the closed outline made of segments ``a -> b``, negative inside (even-odd
    rule: glyph holes are nested contours)."""
    best = np.full(len(points), np.inf)
    inside = np.zeros(len(points), dtype=bool)
    px, py = points[:, :1], points[:, 1:]
    for s in range(0, len(a), chunk):
        a0, b0 = a[s : s + chunk], b[s : s + chunk]
        dx, dy = (b0 - a0).T
        length2 = dx * dx + dy * dy
        ax, ay = a0.T
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
        ex, ey = px - (ax + t * dx), py - (ay + t * dy)
        best = np.minimum(best, (ex * ex + ey * ey).min(axis=1))
        crosses = (ay > py) != (b0[:, 1] > py)
        safe_dy = np.where(dy == 0, 1.0, dy)
        x_at = ax + (py - ay) * dx / safe_dy
        inside ^= (np.count_nonzero(crosses & (px < x_at), axis=1) % 2).astype(bool)
    dist = np.sqrt(best)
    return np.where(inside, -dist, dist)


@functools.lru_cache(maxsize=1)
def _elastic_basis() -> np.ndarray:
    """``(784, 16)`` bilinear upsampling of a 4x4 control grid (spanning the image) to the 28x28 pixels."""
    centres = (np.arange(LEAF_SIDE) + 0.5) / LEAF_SIDE * (_CTRL - 1)
    i0 = np.minimum(np.floor(centres).astype(int), _CTRL - 2)
    f = centres - i0
    w1d = np.zeros((LEAF_SIDE, _CTRL))
    w1d[np.arange(LEAF_SIDE), i0] = 1 - f
    w1d[np.arange(LEAF_SIDE), i0 + 1] = f
    return np.einsum("ia,jb->ijab", w1d, w1d).reshape(LEAF_PIXELS, _CTRL * _CTRL)


def synthetic_femnist(
    n_writers: int = 100,
    seed: int = 0,
    mean_samples: float = 100.0,
    *,
    sample_sigma: float = 0.8,
    min_samples: int | None = None,
    max_samples: int | None = None,
    class_alpha: float = 1.0,
    style_scale: float = 1.0,
    jitter_scale: float = 1.0,
    chunk: int = 2048,
) -> FederatedDataset:
    """Offline FEMNIST-like data: 62 classes, 28x28 ``float32`` images in ``[0, 1]`` (ink 1, background 0).

    Every glyph of DejaVu Sans (shipped with matplotlib) is turned once into a cached signed-distance field;
    each image is then a batched numpy warp of it (bilinear sampling): writer style x per-image jitter.

    * **Samples per writer**: lognormal with mean ``mean_samples`` and log-std ``sample_sigma`` (heavy right
      tail), rounded and clipped to ``[min_samples, max_samples]`` (defaults ``max(2, round(mean/10))`` and
      ``round(10 * mean)``).
    * **Class mix**: each writer draws class probabilities from ``Dirichlet(class_alpha * ones(62))`` (smaller
      = more label skew), then its labels i.i.d. from them.
    * **Writer style** (scaled by ``style_scale``, 0 = the plain font): slant (shear, mean right-leaning),
      rotation, size, aspect ratio, stroke width (dilation / erosion of the outline, about 1-3.5 px strokes),
      shakiness (amplitude of a smooth random elastic displacement field), ink level, position.
    * **Per-image jitter** (scaled by ``jitter_scale``): small rotation, size, shear, shift, stroke width and a
      fresh elastic field every image.

    Deterministic by ``seed``; writer ``i`` depends only on ``(seed, i)`` and the other parameters, so
    fewer writers give a prefix of more writers. Writers are named ``synth_00000``, ``synth_00001``, ...;
    samples are stored writer by writer. ``chunk`` bounds the number of images rendered at once (memory).
    """
    n_writers = integer("n_writers", n_writers, 1)
    seed = _seed(seed)
    mean = real("mean_samples", mean_samples, 1.0)
    sigma = real("sample_sigma", sample_sigma, 0.0, 5.0)
    lo = integer("min_samples", min_samples, 1) if min_samples is not None else max(2, round(mean / 10))
    hi = integer("max_samples", max_samples, 1) if max_samples is not None else max(lo, round(10 * mean))
    if not lo <= mean <= hi:
        raise ValueError(
            f"need min_samples <= mean_samples <= max_samples, got min_samples={lo}, "
            f"mean_samples={mean:g}, max_samples={hi}"
        )
    class_alpha = real("class_alpha", class_alpha, 0.0, strict=True)
    style = real("style_scale", style_scale, 0.0, 3.0)
    jitter = real("jitter_scale", jitter_scale, 0.0, 3.0)
    chunk = integer("chunk", chunk, 1)

    mu = math.log(mean) - sigma * sigma / 2
    deg = math.pi / 180
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("cls", "rot", "shear", "sx", "sy", "shift", "stroke", "elastic", "ink")
    }
    counts = np.empty(n_writers, dtype=np.int64)
    for w, child in enumerate(np.random.SeedSequence([seed, 0x5EED]).spawn(n_writers)):
        rng = np.random.default_rng(child)
        n = int(np.clip(np.round(rng.lognormal(mu, sigma)), lo, hi))
        counts[w] = n
        p = rng.dirichlet(np.full(N_FEMNIST_CLASSES, class_alpha))
        cum = np.cumsum(p)
        cls = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), N_FEMNIST_CLASSES - 1)
        # writer style
        w_rot = rng.normal(0.0, 6.0) * deg * style
        w_shear = float(np.clip(rng.normal(0.12, 0.18), -0.3, 0.55)) * style
        w_size = math.exp(rng.normal(0.0, 0.10) * style)
        w_aspect = math.exp(rng.normal(0.0, 0.10) * style)
        w_stroke = rng.uniform(-0.35, 0.75) * style  # pixels of dilation (+) / erosion (-)
        w_shaky = rng.uniform(0.2, 1.0) * style  # pixels, std of the elastic control points
        w_ink = 1.0 - rng.uniform(0.0, 0.3) * style
        w_shift = rng.normal(0.0, 0.7, size=2) * style
        # per-image jitter
        z = rng.standard_normal((n, 6))
        parts["cls"].append(cls)
        parts["rot"].append(w_rot + z[:, 0] * 4.0 * deg * jitter)
        parts["shear"].append(w_shear + z[:, 1] * 0.06 * jitter)
        size = w_size * np.exp(z[:, 2] * 0.05 * jitter)
        parts["sx"].append(size * w_aspect)
        parts["sy"].append(size / w_aspect)
        parts["shift"].append((w_shift + z[:, 3:5] * 0.7 * jitter) * _PIXEL)
        parts["stroke"].append((w_stroke + z[:, 5] * 0.12 * jitter) * _PIXEL)
        parts["elastic"].append(rng.standard_normal((n, _CTRL * _CTRL, 2)) * ((w_shaky + 0.25 * jitter) * _PIXEL))
        parts["ink"].append(np.full(n, w_ink))
    arr = {k: np.concatenate(v) for k, v in parts.items()}
    total = int(counts.sum())
    x = np.empty((total, LEAF_SIDE, LEAF_SIDE), dtype=np.float32)
    for s in range(0, total, chunk):
        sl = slice(s, min(s + chunk, total))
        x[sl] = _render({k: v[sl] for k, v in arr.items()})
    writer = np.repeat(np.arange(n_writers, dtype=np.int64), counts)
    ids = [f"synth_{i:05d}" for i in range(n_writers)]
    return FederatedDataset(x, arr["cls"].astype(np.int64), writer, N_FEMNIST_CLASSES, ids)


def _render(p: dict[str, np.ndarray]) -> np.ndarray:
    """Render a batch: output pixel -> (elastic, shift, inverse affine) -> glyph point -> signed distance ->
    ink ramp at the (dilated / eroded) outline."""
    table = _glyph_table()
    n = len(p["cls"])
    # forward map glyph -> image: M = R(rot) @ Shear(shear) @ diag(sx, sy); we need M^-1.
    c, s = np.cos(p["rot"]), np.sin(p["rot"])
    k, sx, sy = p["shear"], p["sx"], p["sy"]
    m00, m01 = c * sx, (c * k - s) * sy
    m10, m11 = s * sx, (s * k + c) * sy
    det = m00 * m11 - m01 * m10
    f32 = np.float32
    inv00, inv01, inv10, inv11 = (v[:, None].astype(f32) for v in (m11 / det, -m01 / det, -m10 / det, m00 / det))
    det_inv = np.abs(1.0 / det)
    centres = (np.arange(LEAF_SIDE) + 0.5) * _PIXEL - 1.0
    px, py = np.meshgrid(centres, -centres)  # row 0 = top
    qx = (px.ravel() - p["shift"][:, :1]).astype(f32)  # (n, 784)
    qy = (py.ravel() - p["shift"][:, 1:]).astype(f32)
    # elastic displacement, upsampled from the control grid; elementwise (not BLAS) so that an image does not
    # depend on the batch it is rendered in
    basis = _elastic_basis().T.astype(f32)  # (16, 784)
    ex, ey = p["elastic"][:, :, 0].astype(f32), p["elastic"][:, :, 1].astype(f32)
    for j in range(basis.shape[0]):
        qx += ex[:, j, None] * basis[j]
        qy += ey[:, j, None] * basis[j]
    gx = inv00 * qx + inv01 * qy  # glyph coordinates, (n, 784) each
    gy = inv10 * qx + inv11 * qy
    step = f32((_GRID - 1) / (2 * _GRID_EXTENT))
    fc = np.clip((gx + f32(_GRID_EXTENT)) * step, 0.0, _GRID - 1.0001)
    fr = np.clip((f32(_GRID_EXTENT) - gy) * step, 0.0, _GRID - 1.0001)
    c0, r0 = fc.astype(np.int64), fr.astype(np.int64)
    wc, wr = (fc - c0).astype(np.float32), (fr - r0).astype(np.float32)
    flat = table.reshape(-1)
    base = (p["cls"].astype(np.int64) * (_GRID * _GRID))[:, None] + r0 * _GRID + c0
    d = (flat[base] * (1 - wc) + flat[base + 1] * wc) * (1 - wr) + (
        flat[base + _GRID] * (1 - wc) + flat[base + _GRID + 1] * wc
    ) * wr
    # pixel size in glyph units, to make the anti-aliasing ramp about _EDGE output pixels wide
    ramp = (_EDGE * _PIXEL * np.sqrt(det_inv)).astype(np.float32)[:, None]
    stroke = (p["stroke"] * np.sqrt(det_inv)).astype(np.float32)[:, None]
    ink = np.clip(0.5 - (d - stroke) / ramp, 0.0, 1.0) * p["ink"].astype(np.float32)[:, None]
    return ink.reshape(n, LEAF_SIDE, LEAF_SIDE).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn's digits
# ---------------------------------------------------------------------------------------------------------------

DIGITS_PARTITIONS = ("dirichlet", "pseudo_writer")


def digits_federated(
    n_writers: int = 10, partition: str = "dirichlet", alpha: float = 0.5, seed: int = 0
) -> FederatedDataset:
    """scikit-learn's bundled digits (1797 images, 8x8, values 0-16 scaled to ``[0, 1]``, already ink = high),
    partitioned over ``n_writers`` writers (``1..1797``); sample ``i`` is ``load_digits()`` sample ``i``.

    * ``"dirichlet"``: label skew as in Hsu et al. (2019): for every class, its samples are shuffled and split
      over the writers in proportions drawn from ``Dirichlet(alpha * ones(n_writers))`` (small ``alpha`` = each
      writer holds few classes; large = near-IID).
    * ``"pseudo_writer"``: style-coherent writers: the top 3 principal components of the class-centred
      images (stroke mass, slant, width, ...; randomly rotated by ``seed``) span a "style space"; every class is
      cut by the same k-d tree over it, and leaf ``j`` of every class goes to writer ``j``. Each writer thus
      holds about ``1/n_writers`` of every class, all in one style (e.g. thick and right-leaning), like a real
      writer filling in a form. ``alpha`` is ignored.

    Every writer gets at least one sample (a writer left empty by the partition takes one random sample
    from the currently largest writer; only needed for tiny ``alpha`` or more writers than a class has samples).
    Deterministic by ``seed``.
    """
    if partition not in DIGITS_PARTITIONS:
        raise ValueError(f"partition must be one of {DIGITS_PARTITIONS}, got {partition!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "digits_federated (fedsgd_v0's objective='logistic') needs scikit-learn for its bundled "
            "digits data set: pip install 'fedgames[digits]'"
        ) from exc
    data = load_digits()
    x = (np.asarray(data.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    y = np.asarray(data.target, dtype=np.int64)
    n_writers = integer("n_writers", n_writers, 1, len(y))
    alpha = real("alpha", alpha, 0.0, strict=True)
    rng = np.random.default_rng(_seed(seed))
    if partition == "dirichlet":
        writer = _dirichlet_partition(y, n_writers, alpha, rng)
    else:
        writer = _pseudo_writer_partition(x, y, n_writers, rng)
    ids = [f"digits_{i:04d}" for i in range(n_writers)]
    return FederatedDataset(x, y, writer, 10, ids)


def _dirichlet_partition(y: np.ndarray, n_writers: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    writer = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        q = rng.dirichlet(np.full(n_writers, alpha))
        bounds = np.round(np.cumsum(q)[:-1] * len(idx)).astype(np.int64)
        for w, part in enumerate(np.split(idx, bounds)):
            writer[part] = w
    return _fill_empty(writer, n_writers, rng)


def _fill_empty(writer: np.ndarray, n_writers: int, rng: np.random.Generator) -> np.ndarray:
    """Give every empty writer one random sample of the currently largest writer (needs n >= n_writers)."""
    counts = np.bincount(writer, minlength=n_writers)
    for w in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))  # holds >= 2 samples while some writer is empty and n >= n_writers
        writer[rng.choice(np.flatnonzero(writer == donor))] = w
        counts[donor] -= 1
        counts[w] += 1
    return writer


_STYLE_DIMS = 3


def _pseudo_writer_partition(x: np.ndarray, y: np.ndarray, n_writers: int, rng: np.random.Generator) -> np.ndarray:
    """Style directions = the top principal components of the class-centred images (stroke mass, slant, ...),
    randomly rotated. Every class is cut by the same k-d tree over these directions (alternating the direction
    at each level, halves in proportion to the writers below), and leaf ``j`` of every class goes to writer
    ``j``: each writer holds about ``n_c / n_writers`` samples of every class ``c``, all from one region of
    style space."""
    flat = x.reshape(len(y), -1).astype(np.float64)
    resid = flat.copy()
    for c in np.unique(y):
        resid[y == c] -= resid[y == c].mean(axis=0)
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    k = min(_STYLE_DIMS, vt.shape[0])
    rotation = np.linalg.qr(rng.standard_normal((k, k)))[0]
    style = resid @ vt[:k].T @ rotation
    writer = np.empty(len(y), dtype=np.int64)

    def cut(idx: np.ndarray, first: int, count: int, depth: int) -> None:
        if count == 1:
            writer[idx] = first
            return
        left = count // 2
        ordered = idx[np.argsort(style[idx, depth % k], kind="stable")]
        at = int(round(len(idx) * left / count))
        cut(ordered[:at], first, left, depth + 1)
        cut(ordered[at:], first + left, count - left, depth + 1)

    for c in np.unique(y):
        cut(rng.permutation(np.flatnonzero(y == c)), 0, n_writers, 0)
    return _fill_empty(writer, n_writers, rng)


# ---------------------------------------------------------------------------------------------------------------
# A look at the data
# ---------------------------------------------------------------------------------------------------------------


def save_sample_grid(
    dataset: FederatedDataset, path: str | Path, n_writers: int = 8, per_writer: int = 12, zoom: int = 3
) -> Path:
    """Save a PNG grid: one row per writer (the first ``n_writers`` with data), its first ``per_writer`` images
    drawn dark on white, labels not shown. Returns the path."""
    if not isinstance(dataset, FederatedDataset):
        raise ValueError(f"dataset must be a FederatedDataset, got {type(dataset).__name__}")
    n_writers = integer("n_writers", n_writers, 1)
    per_writer = integer("per_writer", per_writer, 1)
    zoom = integer("zoom", zoom, 1, 16)
    from matplotlib import image as mpimg

    h, w = dataset.image_shape
    gap = 2
    rows = [idx[:per_writer] for idx in dataset.clients() if len(idx)][:n_writers]
    if not rows:
        raise ValueError("dataset has no samples to draw")
    canvas = np.zeros((len(rows) * (h + gap) + gap, per_writer * (w + gap) + gap), dtype=np.float32)
    canvas[:] = 0.35  # grey separators
    for r, idx in enumerate(rows):
        for c in range(per_writer):
            top, left = gap + r * (h + gap), gap + c * (w + gap)
            canvas[top : top + h, left : left + w] = dataset.x[idx[c]] if c < len(idx) else 0.0
    canvas = np.kron(canvas, np.ones((zoom, zoom), dtype=np.float32))
    out = Path(path)
    mpimg.imsave(out, canvas, cmap="gray_r", vmin=0.0, vmax=1.0)
    return out
