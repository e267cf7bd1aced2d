"""Segmentation of a ROI into its blob mask, the IFCB Dashboard v4 way.

The rule is the v4 feature extractor's `segment_roi` (WHOIGit/ifcb-features `ifcb_features/segmentation.py`, a
port of WHOI's MATLAB `ifcb-analysis` v4 `blob_v4`), applied without a stitch mask as the Dashboard's batch
extractor calls it (`extract_slim_features.py`: `compute_features(image)`):

1. edge strength: phase congruency M + m (`phase_congruency.edge_strength`);
2. hysteresis threshold of the edges (`HYST_HIGH`, `HYST_LOW`, 8-connected: Kovesi's `hysthresh`);
3. edge pixels in the outermost row or column dropped where their inner neighbour is not an edge;
4. closing by a diamond of radius 2 (on the mask padded by 2 zero pixels, then cropped);
5. 3 iterations of MATLAB's `bwmorph(..., 'thin')` (two sub-iterations each, the Lam-Lee-Suen look-up rule);
6. OR the dark pixels: 2-means clustering of the grey levels (`dark_pixels`);
7. holes filled (background not 4-connected to the border);
8. eroded by a diamond of radius 1 if that leaves any blob of the minimum size, then blobs (8-connected) smaller
   than `BLOB_MIN_PIXELS` removed (MATLAB `bwareaopen(B, 41)`).

Every step works on arrays of the ROI's size with OpenCV (morphology, connected components) and scipy.ndimage
(hole filling); the result is the same mask as the reference's, pixel for pixel, on the real bins the project
tests against.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from pipeline.morphology.phase_congruency import edge_strength

#: Hysteresis thresholds of the edge strength (`HT_T1`, `HT_T2` of the reference).
HYST_HIGH, HYST_LOW = 0.3, 0.09
#: Blobs of fewer pixels than this are dropped (`bwareaopen(B, 41)`: the reference's `BLOB_MIN` + 1).
BLOB_MIN_PIXELS = 41
#: Dark pixels: grey level at most this fraction of the darkest background level (`DARK_THRESHOLD_ADJUSTMENT`).
DARK_FRACTION = 0.75
#: Iterations of the thinning (step 5).
THIN_ITERATIONS = 3

_DIAMOND_1 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)
_DIAMOND_2 = np.array(
    [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], dtype=np.uint8
)


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """The two look-up tables of MATLAB's `bwmorph(B, 'thin')` (Lam, Lee & Suen 1992, "Thinning methodologies",
    conditions G1, G2 and G3 / G3'), indexed by the 8-neighbourhood code of `_neighbour_code`: True = delete.

    Neighbour bit k is x_(k+1) of the paper: x1 east, then anticlockwise (NE, N, NW, W, SW, S, SE)."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [(code >> k) & 1 for k in range(8)]  # x[0] = x1 ... x[7] = x8
        # G1: crossing number 1
        crossings = sum(1 for i in (0, 2, 4, 6) if not x[i] and (x[i + 1] or x[(i + 2) % 8]))
        # G2: 2 <= min(n1, n2) <= 3
        n1 = sum(1 for k in (1, 3, 5, 7) if x[k - 1] or x[k])
        n2 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[(k + 1) % 8])
        g12 = crossings == 1 and 2 <= min(n1, n2) <= 3
        # G3: (x2 or x3 or not x8) and x1 is false; G3': (x6 or x7 or not x4) and x5 is false
        g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        g3p = not ((x[5] or x[6] or not x[3]) and x[4])
        first[code] = g12 and g3
        second[code] = g12 and g3p
    return first, second


_THIN_FIRST, _THIN_SECOND = _thinning_tables()
# weights of the 8 neighbours in the code: E=1, NE=2, N=4, NW=8, W=16, SW=32, S=64, SE=128
_NEIGHBOUR_WEIGHTS = np.array([[8, 4, 2], [16, 0, 1], [32, 64, 128]], dtype=np.float32)


def _neighbour_code(mask: np.ndarray) -> np.ndarray:
    """The 8-neighbourhood code (0..255) of every pixel of a 0/1 uint8 mask (outside the image counts as 0)."""
    code = cv2.filter2D(mask, cv2.CV_32F, _NEIGHBOUR_WEIGHTS, borderType=cv2.BORDER_CONSTANT)
    return code.astype(np.uint8)


def thin(mask: np.ndarray, iterations: int = THIN_ITERATIONS) -> np.ndarray:
    """MATLAB `bwmorph(mask, 'thin', iterations)` on a bool mask (rows, cols): bool of the same shape.

    Source: the reference's `bwmorph_thin` (`ifcb_features/morphology.py`): each iteration deletes, in two
    sub-iterations, the pixels whose neighbourhood code the Lam-Lee-Suen tables mark."""
    skel = mask.astype(np.uint8)
    for _ in range(iterations):
        for table in (_THIN_FIRST, _THIN_SECOND):
            delete = table[_neighbour_code(skel)]
            skel[delete] = 0
    return skel.astype(bool)


def hysteresis(strength: np.ndarray, high: float = HYST_HIGH, low: float = HYST_LOW) -> np.ndarray:
    """Pixels of `strength` above `low` 8-connected to a pixel above `high`: bool of the same shape.

    Source: Kovesi's `hysthresh` as the reference writes it (`ifcb_features/morphology.py`: grow the pixels above
    `high` by 8-connected dilation within the pixels above `low` until nothing changes): the same set as the
    8-connected components of (strength > low) that hold a pixel above `high`."""
    weak = (strength > low).astype(np.uint8)
    n, labels = cv2.connectedComponents(weak, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(strength.shape, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    keep[labels[strength > high]] = True
    keep[0] = False
    return keep[labels]


def _trim_border(edges: np.ndarray) -> np.ndarray:
    """Step 3, in the reference's order: left, right, top, bottom (each sees the previous ones' result)."""
    b = edges.copy()
    if b.shape[1] >= 2:
        b[b[:, 1] == 0, 0] = False
        b[b[:, -2] == 0, -1] = False
    if b.shape[0] >= 2:
        b[0, b[1, :] == 0] = False
        b[-1, b[-2, :] == 0] = False
    return b


def _close(mask: np.ndarray) -> np.ndarray:
    """Step 4: closing by a radius-2 diamond on the mask padded with 2 zero pixels, cropped back."""
    padded = np.pad(mask.astype(np.uint8), 2)
    grown = cv2.dilate(padded, _DIAMOND_2, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    closed = cv2.erode(grown, _DIAMOND_2, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return closed[2:-2, 2:-2].astype(bool)


def _kmeans_two(
    levels: np.ndarray, counts: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch 2-means of the grey `levels` (float64, distinct, ascending) with `counts` pixels each, from centres 0
    and 1: (pixels of each level in cluster 0, in cluster 1), int64 each, and the two centres.

    MATLAB `kmeans(x, 2, 'Start', [0; 1])` on the pixel values, as the reference reproduces it
    (`_kmeans_1d_strict`): every pixel to its nearest centre (a pixel exactly between the two stays where it was;
    at the start, cluster 0), centres the means of their pixels, until no pixel moves or the summed distance stops
    falling; a cluster left empty takes the one pixel farthest from its centre (MATLAB's 'singleton' rule). The
    state is kept per level (pixels of one level in each cluster), so the cost is that of <= 256 values."""
    centres = np.array([0.0, 1.0])
    to_one = np.abs(levels - 1.0) < np.abs(levels - 0.0)
    n1 = np.where(to_one, counts, 0).astype(np.int64)
    n0 = counts.astype(np.int64) - n1
    previous: tuple[np.ndarray, np.ndarray] | None = None
    previous_total = np.inf
    for _ in range(max_iter):
        for c, n in ((0, n0), (1, n1)):
            if n.sum() > 0:
                centres[c] = (n * levels).sum() / n.sum()
        for empty, n_empty, n_full in ((0, n0, n1), (1, n1, n0)):
            if n_empty.sum() == 0 and n_full.sum() >= 2:
                present = n_full > 0
                distance = np.where(present, np.abs(levels - centres[1 - empty]), -1.0)
                lonely = int(np.argmax(distance))
                n_full[lonely] -= 1
                n_empty[lonely] += 1
                centres[empty] = levels[lonely]
                centres[1 - empty] = (n_full * levels).sum() / n_full.sum()
        d0 = (levels - centres[0]) ** 2
        d1 = (levels - centres[1]) ** 2
        total = (n0 * d0).sum() + (n1 * d1).sum()
        if previous is not None and previous_total <= total:
            n0, n1 = previous
            for c, n in ((0, n0), (1, n1)):
                if n.sum() > 0:
                    centres[c] = (n * levels).sum() / n.sum()
            break
        previous, previous_total = (n0.copy(), n1.copy()), total
        move_to_one = (d1 < d0) & (n0 > 0)
        move_to_zero = (d0 < d1) & (n1 > 0)
        if not move_to_one.any() and not move_to_zero.any():
            break
        n1 = np.where(move_to_one, n0 + n1, np.where(move_to_zero, 0, n1))
        n0 = counts.astype(np.int64) - n1
    return n0, n1, centres


def dark_pixels(image: np.ndarray) -> np.ndarray:
    """Step 6: the dark (target) pixels of a uint8 `image`: bool of the same shape.

    Source: the reference's `kmeans_segment` (`ifcb_features/segmentation.py`): grey levels scaled to [0, 1]
    (float32, MATLAB `im2single`) are split in two by 2-means (`_kmeans_two`); the brighter cluster is background;
    a pixel is dark when it is not background and its level is at most `DARK_FRACTION` x the darkest background
    level. Computed on the histogram (256 levels): the same decision for every pixel of one level."""
    hist = np.bincount(image.ravel(), minlength=256)
    present = np.flatnonzero(hist)
    scaled = np.arange(256, dtype=np.float32) / np.float32(255.0)
    n0, n1, centres = _kmeans_two(scaled[present].astype(np.float64), hist[present])
    in_background = n1 if centres[1] > centres[0] else n0
    darkest = scaled[present][in_background > 0].min()
    threshold = np.float32(darkest) * np.float32(DARK_FRACTION)
    table = np.zeros(256, dtype=bool)
    # a level is dark when some of its pixels are not background and it is at most the threshold
    table[present] = (in_background < hist[present]) & ~(scaled[present] > threshold)
    return table[image]


def remove_small_blobs(mask: np.ndarray, min_pixels: int = BLOB_MIN_PIXELS) -> np.ndarray:
    """`mask` without its 8-connected blobs of fewer than `min_pixels` pixels (MATLAB `bwareaopen`; the reference's
    `apply_blob_min`): bool of the same shape."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False
    return keep[labels]


def segment(image: np.ndarray) -> np.ndarray:
    """The blob mask of a ROI: `image` uint8 (rows, cols), any size; bool (rows, cols), True on target pixels.

    Steps 1-8 of the module's rule. Raises ValueError for an image that is not 2-D uint8 or is empty."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"segment takes a 2-D uint8 image, got {image.dtype} of shape {image.shape}")
    if image.size == 0:
        raise ValueError("segment takes a non-empty image")
    edges = hysteresis(edge_strength(image))
    edges = _trim_border(edges)
    edges = _close(edges)
    edges = thin(edges)
    mask = edges | dark_pixels(image)
    mask = ndimage.binary_fill_holes(mask)
    eroded = cv2.erode(mask.astype(np.uint8), _DIAMOND_1, borderType=cv2.BORDER_REFLECT).astype(bool)
    eroded_kept = remove_small_blobs(eroded)
    return eroded_kept if eroded_kept.any() else remove_small_blobs(mask)
