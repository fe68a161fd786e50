"""The FedSGD data layer (SPEC §6): FederatedDataset, the LEAF reader / writer, synthetic FEMNIST, digits."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fedgames.envs.fedsgd import data as D


@pytest.fixture(scope="module")
def synth():
    """100 writers with the default settings (the size the timing target is about)."""
    start = time.perf_counter()
    ds = D.synthetic_femnist(n_writers=100, seed=0)
    print(
        f"\nsynthetic_femnist(100 writers, {len(ds)} images): {time.perf_counter() - start:.2f} s "
        f"(includes the one-off glyph table)"
    )
    return ds


@pytest.fixture(scope="module")
def small():
    """Many writers with few samples each (cheap to write as JSON)."""
    return D.synthetic_femnist(n_writers=120, seed=7, mean_samples=4, min_samples=1, max_samples=12)


def ink_anova_f(ds) -> float:
    """ANOVA F of per-image mean ink (class means removed) between writers: ~1 when writers share a style."""
    ink = ds.x.reshape(len(ds), -1).mean(axis=1).astype(np.float64)
    for c in np.unique(ds.y):
        ink[ds.y == c] -= ink[ds.y == c].mean()
    n = ds.num_samples
    means = np.bincount(ds.writer, ink, ds.n_writers) / n
    between = (n * (means - ink.mean()) ** 2).sum() / (ds.n_writers - 1)
    within = ((ink - means[ds.writer]) ** 2).sum() / (len(ds) - ds.n_writers)
    return between / within


def label_skew(ds) -> float:
    """Sample-weighted mean total-variation distance between a writer's label mix and the global one."""
    cc = ds.class_counts().astype(np.float64)
    n = cc.sum(axis=1)
    tv = 0.5 * np.abs(cc / n[:, None] - cc.sum(axis=0) / n.sum()).sum(axis=1)
    return float((tv * n).sum() / n.sum())


# ---------------------------------------------------------------------------------------------------------------
# Module and the common structure
# ---------------------------------------------------------------------------------------------------------------


def test_module_imports_with_numpy_only(run_without_packages):
    """The data layer must run on a machine with numpy alone: PettingZoo, Gymnasium and SB3 are blocked, and
    nothing heavier is loaded by the import."""
    code = (
        "import sys\n"
        "import fedgames.envs.fedsgd.data\n"
        "print(sorted(k for k in ('matplotlib', 'sklearn', 'torch', 'scipy', 'pettingzoo') if k in sys.modules))"
    )
    assert run_without_packages(code) == "[]"


def toy(n_per_writer=(5, 1, 0, 12), n_classes=3):
    """Images whose pixel value encodes the sample index (to follow samples through split / subset)."""
    n = sum(n_per_writer)
    x = np.broadcast_to((np.arange(n, dtype=np.float32) / max(n, 1))[:, None, None], (n, 4, 4)).copy()
    writer = np.repeat(np.arange(len(n_per_writer)), n_per_writer)
    y = np.arange(n) % n_classes
    return D.FederatedDataset(x, y, writer, n_classes, [f"w{i}" for i in range(len(n_per_writer))])


def index_of(ds, n_total):
    return np.round(ds.x[:, 0, 0] * n_total).astype(int)


def test_dataset_basics():
    ds = toy()
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and ds.writer.dtype == np.int64
    assert ds.num_samples.tolist() == [5, 1, 0, 12] and ds.n_writers == 4 and len(ds) == 18
    clients = ds.clients()
    assert [len(c) for c in clients] == [5, 1, 0, 12]
    assert np.array_equal(np.sort(np.concatenate(clients)), np.arange(18))
    assert all(np.all(ds.writer[c] == w) for w, c in enumerate(clients))
    assert ds.class_counts().sum() == 18 and ds.class_counts().shape == (4, 3)
    s = ds.summary()
    assert s == {
        "writers": 4,
        "samples": 18,
        "classes": 3,
        "classes_present": 3,
        "image_shape": (4, 4),
        "samples_per_writer_min": 0,
        "samples_per_writer_median": 3.0,
        "samples_per_writer_max": 12,
    }
    assert "writers=4" in repr(ds)


@pytest.mark.parametrize(
    "change, word",
    [
        (dict(x=np.zeros((3, 4))), "x"),
        (dict(x=np.full((3, 2, 2), 1.5)), "x"),
        (dict(x=np.full((3, 2, 2), np.nan)), "x"),
        (dict(y=np.array([0, 1, 5])), "y"),
        (dict(y=np.array([0, 1])), "y"),
        (dict(y=np.array([0.5, 1, 1])), "y"),
        (dict(writer=np.array([0, 1, 2])), "writer"),
        (dict(writer=np.array([0, -1, 1])), "writer"),
        (dict(writer_ids=["a", "a"]), "writer_ids"),
        (dict(writer_ids=[]), "writer_ids"),
        (dict(n_classes=0), "n_classes"),
        (dict(writer_ids=3), "writer_ids"),
    ],
)
def test_dataset_validation(change, word):
    args = (
        dict(
            x=np.zeros((3, 2, 2)), y=np.array([0, 1, 1]), writer=np.array([0, 1, 1]), n_classes=2, writer_ids=["a", "b"]
        )
        | change
    )
    with pytest.raises(ValueError, match=word):
        D.FederatedDataset(**args)


def test_split_within_writers():
    ds = toy((10, 1, 0, 7, 2, 33))
    train, test = ds.split(test_fraction=0.2, seed=3)
    assert train.writer_ids == ds.writer_ids == test.writer_ids
    n = ds.num_samples
    assert np.all(train.num_samples + test.num_samples == n)
    assert np.all(train.num_samples[n > 0] >= 1)  # every writer with data stays a training client
    expected = np.minimum(np.floor(0.2 * n + 0.5), np.maximum(n - 1, 0)).astype(int)
    assert test.num_samples.tolist() == expected.tolist() == [2, 0, 0, 1, 0, 7]
    assert np.all(np.abs(test.num_samples - 0.2 * n)[n > 1] <= 0.5)
    i_train, i_test = index_of(train, len(ds)), index_of(test, len(ds))
    assert not set(i_train) & set(i_test)
    assert np.array_equal(np.sort(np.concatenate([i_train, i_test])), np.arange(len(ds)))
    assert np.array_equal(train.writer, ds.writer[i_train]) and np.array_equal(test.y, ds.y[i_test])
    again = ds.split(test_fraction=0.2, seed=3)[1]
    other = ds.split(test_fraction=0.2, seed=4)[1]
    assert np.array_equal(index_of(again, len(ds)), i_test)
    assert not np.array_equal(index_of(other, len(ds)), i_test)
    assert len(ds.split(0.0)[1]) == 0
    for bad in (1.0, -0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="test_fraction"):
            ds.split(bad)
    with pytest.raises(ValueError, match="seed"):
        ds.split(0.1, seed=-1)


def test_split_of_synthetic_respects_fraction(synth):
    train, test = synth.split(test_fraction=0.1, seed=0)
    assert len(train) + len(test) == len(synth)
    assert np.all(train.num_samples >= 1)
    assert abs(len(test) / len(synth) - 0.1) < 0.01


def test_subset():
    ds = toy((5, 1, 0, 12))
    sub = ds.subset(["w3", 0])
    assert sub.writer_ids == ["w3", "w0"] and sub.num_samples.tolist() == [12, 5]
    idx = index_of(sub, len(ds))
    assert np.all(np.diff(idx) > 0)  # samples keep their order
    assert np.array_equal(sub.writer, np.where(ds.writer[idx] == 3, 0, 1))
    assert ds.subset(np.array([1])).num_samples.tolist() == [1]
    assert ds.subset("w2").n_samples == 0
    for bad, word in (
        (["nobody"], "unknown"),
        ([4], "out of range"),
        ([0, "w0"], "repeat"),
        ([], "at least one"),
        ([1.0], "writer indices"),
    ):
        with pytest.raises(ValueError, match=word):
            ds.subset(bad)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic FEMNIST
# ---------------------------------------------------------------------------------------------------------------


def test_synthetic_shapes_and_ranges(synth):
    assert synth.x.shape == (len(synth), 28, 28) and synth.x.dtype == np.float32
    assert synth.y.dtype == np.int64 and synth.writer.dtype == np.int64
    assert synth.n_classes == 62 and synth.n_writers == 100 and len(set(synth.writer_ids)) == 100
    assert synth.x.min() >= 0.0 and synth.x.max() <= 1.0 and synth.x.max() > 0.9
    # ink 1 on background 0: the border is background, ink covers a minority of pixels
    border = np.concatenate([synth.x[:, 0], synth.x[:, -1], synth.x[:, :, 0], synth.x[:, :, -1]], axis=1)
    assert border.mean() < 0.01
    assert 0.03 < synth.x.mean() < 0.25
    assert np.all(np.diff(synth.writer) >= 0)  # stored writer by writer
    assert (synth.x.reshape(len(synth), -1).max(axis=1) > 0.5).all()  # no blank image


def test_synthetic_deterministic_by_seed(synth):
    again = D.synthetic_femnist(n_writers=100, seed=0)
    assert np.array_equal(again.x, synth.x) and np.array_equal(again.y, synth.y)
    assert np.array_equal(again.writer, synth.writer) and again.writer_ids == synth.writer_ids
    other = D.synthetic_femnist(n_writers=10, seed=1)
    prefix = D.synthetic_femnist(n_writers=10, seed=0)
    assert not np.array_equal(other.num_samples, prefix.num_samples) or not np.array_equal(other.y, prefix.y)
    # writer i depends only on (seed, i): fewer writers are a prefix of more writers
    n = prefix.n_samples
    assert np.array_equal(prefix.x, synth.x[:n]) and np.array_equal(prefix.y, synth.y[:n])
    assert np.array_equal(D.synthetic_femnist(n_writers=10, seed=0, chunk=97).x, prefix.x)  # batch-independent


def test_synthetic_heavy_tail_and_coverage(synth):
    counts = synth.num_samples
    median = np.median(counts)
    assert counts.max() >= 3 * median, counts
    assert counts.min() >= max(2, round(100 / 10))
    assert np.unique(synth.y).size == 62
    writers_per_class = (synth.class_counts() > 0).sum(axis=0)
    assert writers_per_class.min() >= 10, writers_per_class
    # class mixes differ between writers (Dirichlet), more than multinomial noise around one mix would give
    iid = D.FederatedDataset(synth.x, np.random.default_rng(0).permutation(synth.y), synth.writer, 62, synth.writer_ids)
    assert label_skew(synth) > label_skew(iid) + 0.1


def test_synthetic_sample_count_options():
    ds = D.synthetic_femnist(n_writers=30, seed=2, mean_samples=20, min_samples=15, max_samples=25, sample_sigma=1.5)
    assert ds.num_samples.min() >= 15 and ds.num_samples.max() <= 25
    flat = D.synthetic_femnist(n_writers=5, seed=2, mean_samples=20, sample_sigma=0.0)
    assert flat.num_samples.tolist() == [20] * 5


def test_synthetic_writer_styles_differ():
    styled = D.synthetic_femnist(n_writers=60, seed=5)
    plain = D.synthetic_femnist(n_writers=60, seed=5, style_scale=0.0)
    f_styled, f_plain = ink_anova_f(styled), ink_anova_f(plain)
    print(f"\nink ANOVA F between writers: styled {f_styled:.1f}, style_scale=0 {f_plain:.2f}")
    assert f_styled > 20 and f_plain < 3
    bare = D.synthetic_femnist(n_writers=3, seed=5, style_scale=0.0, jitter_scale=0.0)
    for c in np.unique(bare.y):  # without style or jitter every writer draws a class identically
        imgs = bare.x[bare.y == c]
        assert np.allclose(imgs, imgs[0], atol=1e-5)


def test_synthetic_classes_are_learnable(synth):
    """Nearest centroid on per-class mean images of writers 0-49, scored on writers 50-99 (unseen styles)."""
    fit, held = synth.subset(range(50)), synth.subset(range(50, 100))
    xf = fit.x.reshape(len(fit), -1)
    present = np.unique(fit.y)
    centroids = np.stack([xf[fit.y == c].mean(axis=0) for c in present])
    xh = held.x.reshape(len(held), -1)
    dist = (xh**2).sum(1)[:, None] - 2 * xh @ centroids.T + (centroids**2).sum(1)[None]
    accuracy = float((present[dist.argmin(axis=1)] == held.y).mean())
    print(f"\nnearest-centroid accuracy on unseen writers: {accuracy:.3f} (chance 1/62 = {1 / 62:.3f})")
    assert accuracy > 0.25


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(n_writers=0), "n_writers"),
        (dict(n_writers=2.0), "n_writers"),
        (dict(seed=-1), "seed"),
        (dict(mean_samples=0), "mean_samples"),
        (dict(mean_samples=5, min_samples=10), "min_samples"),
        (dict(mean_samples=50, max_samples=10), "max_samples"),
        (dict(class_alpha=0), "class_alpha"),
        (dict(sample_sigma=-1), "sample_sigma"),
        (dict(style_scale=float("inf")), "style_scale"),
        (dict(jitter_scale=-0.1), "jitter_scale"),
    ],
)
def test_synthetic_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        D.synthetic_femnist(**({"n_writers": 2} | kwargs))


def test_sample_grid_png(tmp_path, synth):
    out = D.save_sample_grid(synth, tmp_path / "grid.png", n_writers=8, per_writer=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# LEAF layout
# ---------------------------------------------------------------------------------------------------------------


def test_leaf_round_trip(tmp_path, small):
    paths = D.write_leaf_json(small, tmp_path)
    assert [p.name for p in paths] == ["all_data_0.json", "all_data_1.json"]
    raw = json.loads(paths[1].read_text())
    assert len(raw["users"]) == 20 and raw["users"] == small.writer_ids[100:]
    first = raw["user_data"][raw["users"][0]]
    assert len(first["x"][0]) == 784 and raw["num_samples"][0] == len(first["y"])
    assert first["x"][0][0] == pytest.approx(1.0)  # white background on disk
    back = D.load_leaf_femnist(tmp_path)
    assert back.writer_ids == small.writer_ids and back.n_classes == 62
    assert np.array_equal(back.y, small.y) and np.array_equal(back.writer, small.writer)
    assert back.x.dtype == np.float32 and back.x.shape == small.x.shape
    np.testing.assert_allclose(back.x, small.x, atol=1e-6)
    five = D.load_leaf_femnist(tmp_path, max_writers=5)
    assert five.writer_ids == small.writer_ids[:5] and len(five) == small.num_samples[:5].sum()
    with pytest.raises(ValueError, match="overwrite"):
        D.write_leaf_json(small, tmp_path)
    D.write_leaf_json(small, tmp_path, overwrite=True)


def test_leaf_files_read_in_natural_order(tmp_path, small):
    sub = small.subset(range(25))
    paths = D.write_leaf_json(sub, tmp_path, writers_per_file=2)
    assert len(paths) == 13 and paths[-1].name == "all_data_12.json"
    assert D.load_leaf_femnist(tmp_path).writer_ids == sub.writer_ids  # all_data_2 before all_data_10


def leaf_doc(users=("u0", "u1"), n=(2, 1), value=1.0, label=3):
    return {
        "users": list(users),
        "num_samples": list(n),
        "user_data": {u: {"x": [[value] * 784 for _ in range(k)], "y": [label] * k} for u, k in zip(users, n)},
    }


def test_leaf_background_is_inverted(tmp_path):
    doc = leaf_doc(users=("f0001_42",), n=(1,))
    doc["user_data"]["f0001_42"]["x"][0][28 * 5 + 7] = 0.0  # one black (ink) pixel on white, row 5 col 7
    doc["user_data"]["f0001_42"]["x"][0][28 * 6 + 7] = 0.25
    (tmp_path / "all_data_0.json").write_text(json.dumps(doc))
    ds = D.load_leaf_femnist(tmp_path)
    assert ds.x.shape == (1, 28, 28) and ds.writer_ids == ["f0001_42"] and ds.y.tolist() == [3]
    assert ds.x[0, 5, 7] == 1.0 and ds.x[0, 6, 7] == 0.75 and ds.x.sum() == 1.75


def corrupt(doc, how):
    u = doc["users"][0]
    if how == "no_users":
        del doc["users"]
    elif how == "no_user_data":
        del doc["user_data"]
    elif how == "count":
        doc["num_samples"][0] = 3
    elif how == "lengths":
        doc["num_samples"].append(4)
    elif how == "short_row":
        doc["user_data"][u]["x"][0] = [1.0] * 783
    elif how == "ragged":
        doc["user_data"][u]["x"][1] = [1.0] * 10
    elif how == "range":
        doc["user_data"][u]["x"][0][0] = 2.0
    elif how == "label":
        doc["user_data"][u]["y"][0] = 62
    elif how == "float_label":
        doc["user_data"][u]["y"][0] = 1.5
    elif how == "missing_user":
        del doc["user_data"][u]
    elif how == "no_y":
        del doc["user_data"][u]["y"]
    elif how == "extra_user":
        doc["user_data"]["ghost"] = {"x": [], "y": []}
    return doc


@pytest.mark.parametrize(
    "how, key",
    [
        ("no_users", "users"),
        ("no_user_data", "user_data"),
        ("count", "num_samples"),
        ("lengths", "num_samples"),
        ("short_row", "'x'"),
        ("ragged", "'x'"),
        ("range", "'x'"),
        ("label", "'y'"),
        ("float_label", "'y'"),
        ("missing_user", "user_data"),
        ("no_y", "'y'"),
        ("extra_user", "user_data"),
    ],
)
def test_leaf_malformed_files_name_file_and_key(tmp_path, how, key):
    (tmp_path / "all_data_0.json").write_text(json.dumps(leaf_doc()))
    (tmp_path / "all_data_1.json").write_text(json.dumps(corrupt(leaf_doc(users=("v0", "v1")), how)))
    with pytest.raises(ValueError, match="all_data_1.json") as info:
        D.load_leaf_femnist(tmp_path)
    assert key in str(info.value)


def test_leaf_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.load_leaf_femnist(tmp_path / "missing")
    with pytest.raises(ValueError, match="no \\*.json"):
        D.load_leaf_femnist(tmp_path)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="a.json.*not valid JSON"):
        D.load_leaf_femnist(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps(leaf_doc()))
    (tmp_path / "b.json").write_text(json.dumps(leaf_doc(users=("u1",), n=(1,))))
    with pytest.raises(ValueError, match="b.json.*'u1'.*a.json"):
        D.load_leaf_femnist(tmp_path)
    with pytest.raises(ValueError, match="max_writers"):
        D.load_leaf_femnist(tmp_path, max_writers=0)
    with pytest.raises(ValueError, match="28x28"):
        D.write_leaf_json(toy(), tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_images():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images / 16.0, data.target


@pytest.mark.parametrize(
    "partition, n_writers, alpha",
    [
        ("dirichlet", 10, 0.5),
        ("dirichlet", 50, 0.01),
        ("dirichlet", 300, 1.0),
        ("dirichlet", 1, 0.5),
        ("pseudo_writer", 10, 0.5),
        ("pseudo_writer", 300, 0.5),
        ("pseudo_writer", 1797, 0.5),
    ],
)
def test_digits_partition_assigns_every_sample_once(digits_images, partition, n_writers, alpha):
    images, target = digits_images
    ds = D.digits_federated(n_writers=n_writers, partition=partition, alpha=alpha, seed=0)
    assert ds.x.shape == (1797, 8, 8) and ds.x.dtype == np.float32 and ds.n_classes == 10
    assert 0.0 <= ds.x.min() and ds.x.max() == 1.0
    np.testing.assert_allclose(ds.x, images, atol=1e-7)  # sample i is load_digits sample i
    assert np.array_equal(ds.y, target)
    assert ds.n_writers == n_writers and ds.num_samples.min() >= 1 and ds.num_samples.sum() == 1797
    assert np.array_equal(np.sort(np.concatenate(ds.clients())), np.arange(1797))


def test_digits_dirichlet_skew_grows_as_alpha_shrinks():
    skew = {
        a: np.mean([label_skew(D.digits_federated(20, "dirichlet", a, seed=s)) for s in range(3)])
        for a in (0.05, 0.5, 100.0)
    }
    print(f"\ndigits label skew (mean TV to the global mix) by alpha: {skew}")
    assert skew[0.05] > skew[0.5] + 0.1 and skew[0.5] > skew[100.0] + 0.2 and skew[100.0] < 0.1


def test_digits_pseudo_writers_are_balanced_and_style_coherent():
    ds = D.digits_federated(20, "pseudo_writer", seed=0)
    cc = ds.class_counts()
    assert cc.min() >= 8 and cc.max() <= 10  # every writer holds every digit, in about equal numbers
    assert label_skew(ds) < 0.05

    def within_share(d):  # share of the class-centred pixel variance left inside writers
        r = d.x.reshape(len(d), -1).astype(np.float64)
        for c in range(10):
            r[d.y == c] -= r[d.y == c].mean(axis=0)
        return sum(((r[i] - r[i].mean(axis=0)) ** 2).sum() for i in d.clients()) / (r**2).sum()

    coherent, iid = within_share(ds), within_share(D.digits_federated(20, "dirichlet", alpha=1e4, seed=0))
    print(f"\nwithin-writer share of style variance: pseudo_writer {coherent:.3f}, iid {iid:.3f}")
    assert coherent < iid - 0.08
    again = D.digits_federated(20, "pseudo_writer", seed=0)
    assert np.array_equal(again.writer, ds.writer)
    assert not np.array_equal(D.digits_federated(20, "pseudo_writer", seed=1).writer, ds.writer)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(n_writers=0), "n_writers"),
        (dict(n_writers=1798), "n_writers"),
        (dict(partition="kmeans"), "partition"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_digits_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        D.digits_federated(**kwargs)
