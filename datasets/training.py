"""Training and held-out images from data that ships with the packages, and a seeded patch dataset.

Sources (nothing is downloaded):

- ``mr``: magnitude slices of the ``packaged-mr`` dataset (dipy / nibabel brains), built on first use
  into ``$RECON_DATA/packaged-mr`` (default ``~/.cache/recon``); split by subject as the builder does.
- ``natural``: scikit-image's bundled photographs, as grayscale in [0, 1]. Train: textures, coins,
  moon, page, text, coffee, chelsea, rocket, hubble; validation: cell; test: camera, astronaut.
- ``mni``: slices of the MNI ICBM152 2009a template (nilearn; train split only): a sharp,
  brain-extracted 1 mm brain, cut along all three axes and also at 2 mm, so that the networks see
  anatomy at the scale of the 1 mm T1 and the 2 mm EPI test subjects, as the T1 image and with
  random tissue contrasts (see :func:`template_slices`). The template averages 152 adults, none of
  them the test subjects.
- ``phantom``: procedural phantoms (train split only; unlimited).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from recon.datasets.builders import build_dataset, mni_template
from recon.datasets.fastmri import SliceDataset
from recon.datasets.phantom import phantom
from recon.errors import InputError

NATURAL = {
    "train": (
        "brick",
        "grass",
        "gravel",
        "coins",
        "moon",
        "page",
        "text",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
    ),
    "val": ("cell",),
    "test": ("camera", "astronaut"),
}
SPLITS = ("train", "val", "test")


def data_home() -> Path:
    """Where built datasets are cached: ``$RECON_DATA`` or ``~/.cache/recon``."""
    return Path(os.environ.get("RECON_DATA") or Path.home() / ".cache" / "recon")


def packaged_mr_root() -> Path:
    """The ``packaged-mr`` dataset folder, built on first use."""
    root = data_home() / "packaged-mr"
    if not (root / "manifest.json").exists():
        build_dataset("packaged-mr", root)
    return root


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


@lru_cache(maxsize=8)
def mr_slices(split: str) -> tuple[np.ndarray, ...]:
    """Ground-truth magnitude slices (float32, volume maximum 1) of one split of ``packaged-mr``."""
    _check_split(split)
    files = sorted((packaged_mr_root() / split).glob("*.h5"))
    return tuple(item["target"][0].numpy() for item in SliceDataset(files))


@lru_cache(maxsize=8)
def natural_images(split: str) -> tuple[np.ndarray, ...]:
    """scikit-image photographs of one split, grayscale float32 in [0, 1]."""
    _check_split(split)
    from skimage import color, data, img_as_float32

    out = []
    for name in NATURAL[split]:
        image = getattr(data, name)()
        if image.ndim == 3:
            image = color.rgb2gray(image[..., :3])
        out.append(img_as_float32(image))
    return tuple(out)


@lru_cache(maxsize=2)
def template_slices(step: int = 8, signal: float = 0.3, seed: int = 0) -> tuple[np.ndarray, ...]:
    r"""Every ``step``-th slice along each axis of the MNI template at 1 mm and at 2 mm (2×2×2 mean
    pooling), each twice: the T1 image, and the same anatomy with a random contrast.

    The random contrast is :math:`\sum_k \mu_k p_k` over the tissue probability maps
    :math:`p_k` (CSF = brain − grey − white matter, grey, white) with intensities
    :math:`\mu_k \sim U(0.05, 1)` drawn per slice from ``seed`` (domain randomisation as in
    SynthSeg, Billot et al., Medical Image Analysis 2023): the T1 template alone teaches a T1
    ordering (white > grey > CSF), while the held-out EPI b0 volumes show the reverse. Slices are
    scaled to a maximum of 1; those whose T1 mean is below ``signal`` × the largest slice mean of
    their axis are left out (the edges of the head hold little but background)."""
    from skimage.transform import downscale_local_mean

    t1 = mni_template("t1") / 255.0
    grey, white = mni_template("gm") / 255.0, mni_template("wm") / 255.0
    tissues = np.stack([np.clip((t1 > 0) - grey - white, 0, 1), grey, white])
    out: list[np.ndarray] = []
    for scale, factor in enumerate((1, 2)):
        image = downscale_local_mean(t1, (factor,) * 3).astype(np.float32)
        maps = downscale_local_mean(tissues, (1, *(factor,) * 3)).astype(np.float32)
        for axis in range(3):
            cuts = np.moveaxis(image, axis, 0)[::step]
            cut_maps = np.moveaxis(maps, axis + 1, 1)[:, ::step]
            means = cuts.reshape(cuts.shape[0], -1).mean(axis=1)
            for index in np.flatnonzero(means >= signal * means.max()):
                mu = np.random.default_rng((seed, scale, axis, int(index))).uniform(0.05, 1.0, 3)
                synthetic = np.tensordot(mu.astype(np.float32), cut_maps[:, index], axes=1)
                for slice_ in (cuts[index], synthetic):
                    out.append(np.ascontiguousarray(np.rot90(slice_ / max(float(slice_.max()), 1e-12))))
    return tuple(out)


def image_pool(
    sources: Sequence[str] = ("mr", "natural", "phantom"),
    split: str = "train",
    phantoms: int = 64,
    phantom_size: int = 128,
    seed: int = 0,
) -> list[np.ndarray]:
    """All images of ``split`` from the chosen sources (phantoms only for training)."""
    pool: list[np.ndarray] = []
    for source in sources:
        if source == "mr":
            pool.extend(mr_slices(split))
        elif source == "natural":
            pool.extend(natural_images(split))
        elif source == "phantom":
            if split == "train":
                pool.extend(phantom((phantom_size, phantom_size), (seed, 7, i)) for i in range(phantoms))
        elif source == "mni":
            if split == "train":
                pool.extend(template_slices())
        else:
            raise InputError(f"unknown image source {source!r} (known: mr, mni, natural, phantom)")
    if not pool:
        raise InputError(f"no images for split {split!r} from sources {list(sources)}")
    return pool


class PatchDataset(torch.utils.data.Dataset):
    """Random ``patch × patch`` crops with random flips and 90° rotations; item ``i`` is drawn with
    ``numpy.random.default_rng((seed, i))``, so items are reproducible in any order and worker."""

    def __init__(self, images: Sequence[np.ndarray], patch: int = 64, length: int = 10_000, seed: int = 0):
        if patch < 8:
            raise InputError(f"patch must be >= 8, got {patch}")
        self.images = [self._pad(np.asarray(im, dtype=np.float32), patch) for im in images]
        self.patch, self.length, self.seed = patch, int(length), int(seed)
        areas = np.array([im.size for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()  # sample images in proportion to their area

    @staticmethod
    def _pad(image: np.ndarray, patch: int) -> np.ndarray:
        pad = [(0, max(0, patch - s)) for s in image.shape]
        return np.pad(image, pad, mode="reflect") if any(p[1] for p in pad) else image

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, index))
        image = self.images[rng.choice(len(self.images), p=self.weights)]
        top = rng.integers(0, image.shape[0] - self.patch + 1)
        left = rng.integers(0, image.shape[1] - self.patch + 1)
        crop = image[top : top + self.patch, left : left + self.patch]
        crop = np.rot90(crop, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(crop))[None]
