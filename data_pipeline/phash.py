"""Perceptual hashes of images and the pairs of images that are the same picture.

Every image is reduced to a perceptual hash (pHash: the signs of the low DCT
frequencies of a 32x32 grey thumbnail, ``hash_size**2`` bits), and two images count as
the same picture when their hashes differ in at most ``max_distance`` bits. With the
default 64-bit hash, an exact copy is at 0 and a resized, re-encoded (JPEG) or
slightly brightened/contrasted copy within 0-4; unrelated photos lie around 20-40.
Crops of more than a few percent and flips are not caught (by design of pHash).

Comparisons are vectorised: hashes are packed into uint64 words and compared a
block of rows at a time with XOR + popcount, which is quick for tens of thousands
of images on each side without an index structure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from facellm.images import ImageError, load_image

log = logging.getLogger(__name__)

DEFAULT_HASH_SIZE = 8  # 64-bit pHash


def image_hashes(paths: Iterable[str | Path], hash_size: int = DEFAULT_HASH_SIZE,
                 unreadable: dict[str, str] | None = None, progress: bool = False) -> dict[Path, imagehash.ImageHash]:
    """pHash of each readable image. An image that cannot be read is skipped, logged, and put
    into ``unreadable`` (path -> reason) when that dict is given; this never raises for a bad image."""
    paths = list(dict.fromkeys(Path(p) for p in paths))
    hashes: dict[Path, imagehash.ImageHash] = {}
    for path in tqdm(paths, desc="hashing images", unit="img", disable=not progress):
        try:
            hashes[path] = imagehash.phash(load_image(path), hash_size=hash_size)
        except ImageError as e:
            reason = str(e).removeprefix(f"{path}: ")
            log.warning("skipping unreadable image %s (%s)", path, reason)
            if unreadable is not None:
                unreadable[str(path)] = reason
    return hashes


def pack_bits(hashes: Iterable[imagehash.ImageHash]) -> np.ndarray:
    """(n, words) uint64: each hash's bits packed into 64-bit words, the input of :func:`close_pairs`."""
    rows = [np.packbits(h.hash.ravel()) for h in hashes]
    if not rows:
        return np.zeros((0, 1), dtype=np.uint64)
    packed = np.stack(rows)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words)
    return _BYTE_POPCOUNT[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1)


def close_pairs(a: np.ndarray, b: np.ndarray, max_distance: int,
                same: bool = False) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every row i of ``a`` and j of ``b`` within ``max_distance`` bits
    (with ``same``, a and b are one set and each unordered pair i < j comes once)."""
    if not len(a) or not len(b):
        return []
    block = max(1, (1 << 22) // (len(b) * a.shape[1]))  # ~32 MB of XOR words at a time
    out = []
    for start in range(0, len(a), block):
        d = _popcount(a[start:start + block, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int32)
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        if same:
            keep = j > i
            i, j = i[keep], j[keep]
        out.extend(zip(i.tolist(), j.tolist(), d[i - start, j].tolist()))
    return out


def near_duplicates(paths: list[Path], max_distance: int, hash_size: int = DEFAULT_HASH_SIZE) -> dict[int, int]:
    """Index of each image that is a near-copy of an earlier one -> index of the first of its kind."""
    hashes = image_hashes(paths, hash_size)
    readable = [i for i, p in enumerate(paths) if Path(p) in hashes]
    bits = pack_bits(hashes[Path(paths[i])] for i in readable)
    first: dict[int, int] = {}
    for i, j, _ in sorted(close_pairs(bits, bits, max_distance, same=True)):
        a, b = readable[i], readable[j]
        if b not in first:
            first[b] = first.get(a, a)
    return first


def same_pixels(a: Path, b: Path) -> bool:
    """True when both images decode to the same pixels (an exact copy, whatever the file format)."""
    try:
        with Image.open(a) as x, Image.open(b) as y:
            if x.size != y.size:
                return False
            return np.array_equal(np.asarray(x.convert("RGB")), np.asarray(y.convert("RGB")))
    except Exception:  # noqa: BLE001 - an unreadable image is simply not the same picture
        return False
