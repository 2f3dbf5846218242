"""Segmentation metrics with the exact conventions of the published protocol (REFERENCE §2).

Binary metrics treat any nonzero pixel as foreground. When prediction and ground truth are both
empty there is nothing to get wrong, so Dice, IoU, AJI and AJI+ return 1.0 (a perfect score)
rather than 0/0; an empty ground truth with a non-empty prediction scores 0.0.

The `_paper` metrics restate what the official MDM code computed under the published names, to be
compared with the published numbers only (REFERENCE §6, Scores):
- GlaS "Dice" (`dice_paper`): per-image Dice, except that an empty prediction scores 1;
- GlaS "IoU" (`iou_paper`): D / (2 - D) of the data set's mean `dice_paper`, a data-set score;
- MoNuSeg "AJI" (`aji_paper`): per-image foreground IoU. MoNuSeg "Dice" is the mean per-image
  foreground Dice, which is `dice` (the official returns NaN where both maps are empty, `dice` 1).

The instance metrics work on a sparse contingency table of (ground-truth id, predicted id)
overlap counts, so their cost is one pass over the pixels plus work proportional to the number
of overlapping pairs, never a full-image loop per instance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

# Above this many cells the dense (n_gt+1) x (n_pred+1) table would waste memory; the sparse
# path (np.unique over the overlapping pairs) is used instead. Same result either way.
DENSE_TABLE_MAX_CELLS = 4_000_000
# ddpm-segmentation's guard against 0/0 for classes absent from prediction and ground truth.
MIOU_EPS = 1e-8


def _check_shapes(pred: np.ndarray, gt: np.ndarray) -> None:
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"prediction shape {np.shape(pred)} != ground-truth shape {np.shape(gt)}")


def _fg_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """(|P∩G|, |P|, |G|) of the foregrounds, the only numbers Dice and IoU need."""
    _check_shapes(pred, gt)
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground Dice 2|P∩G|/(|P|+|G|); 1.0 when both masks are empty."""
    inter, n_p, n_g = _fg_counts(pred, gt)
    return 1.0 if n_p + n_g == 0 else 2.0 * inter / (n_p + n_g)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground IoU |P∩G|/|P∪G|; 1.0 when both masks are empty."""
    inter, n_p, n_g = _fg_counts(pred, gt)
    union = n_p + n_g - inter
    return 1.0 if union == 0 else inter / union


def dice_paper(pred: np.ndarray, gt: np.ndarray) -> float:
    """The paper's per-image GlaS Dice: foreground Dice, but 1.0 for an EMPTY prediction whatever
    the ground truth.

    The official score is an object Dice (`ObjDiceLoss`) run on binary maps, where it reduces to
    foreground Dice; its both-empty test `numS == 0 & numG == 0` parses in Python as
    `numS == (0 & numG) == 0`, i.e. `numS == 0`, so a prediction with no foreground scores 1.
    """
    inter, n_p, n_g = _fg_counts(pred, gt)
    return 1.0 if n_p == 0 else 2.0 * inter / (n_p + n_g)


def iou_paper(mean_dice_paper: float) -> float:
    """The paper's GlaS IoU: D / (2 - D) of the data set's mean `dice_paper` D (the IoU a single
    image of Dice D would have), not a mean of per-image IoU."""
    return mean_dice_paper / (2.0 - mean_dice_paper)


def aji_paper(pred: np.ndarray, gt: np.ndarray) -> float:
    """The MoNuSeg "AJI" as the official MDM code computes it: plain foreground IoU.

    That code never labels connected components, so its AJI reduces to binary IoU. Use this only
    to compare with the paper's tables; `aji` is the organisers' instance-level metric.
    """
    return iou(pred, gt)


def instances_from_mask(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Connected components of the foreground (int64, 0 = background).

    connectivity 1 joins only face neighbours (4-connectivity in 2-D); mask.ndim joins all
    neighbours (8-connectivity in 2-D), as in scipy.ndimage.generate_binary_structure.
    """
    fg = np.asarray(mask) != 0
    if not 1 <= connectivity <= max(fg.ndim, 1):
        raise ValueError(f"connectivity must be in 1..{fg.ndim}, got {connectivity}")
    structure = ndimage.generate_binary_structure(fg.ndim, connectivity)
    labels, _ = ndimage.label(fg, structure=structure)
    return labels.astype(np.int64, copy=False)


@dataclass(frozen=True)
class Overlaps:
    """Instance areas and the pairs that overlap; ids are compacted to 1..n (0 = background)."""

    area_gt: np.ndarray  # (n_gt,) pixel count of each ground-truth instance
    area_pred: np.ndarray  # (n_pred,) pixel count of each predicted instance
    pair_gt: np.ndarray  # (k,) 0-based gt index of each overlapping pair
    pair_pred: np.ndarray  # (k,) 0-based pred index of each overlapping pair
    pair_inter: np.ndarray  # (k,) |G∩P| of each pair

    @property
    def pair_union(self) -> np.ndarray:
        return self.area_gt[self.pair_gt] + self.area_pred[self.pair_pred] - self.pair_inter

    @property
    def pair_iou(self) -> np.ndarray:
        return self.pair_inter / self.pair_union


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel arbitrary non-negative instance ids to 0..n (flattened) so tables stay small."""
    flat = np.asarray(labels).ravel()
    if flat.dtype.kind not in "biu" and not np.array_equal(flat, np.round(flat)):
        raise ValueError("instance maps must hold integer ids")
    flat = flat.astype(np.int64)
    if flat.size == 0:
        return flat, 0
    if flat.min() < 0:
        raise ValueError("instance ids must be non-negative (0 = background)")
    if flat.max() <= flat.size:  # a lookup table no larger than the image: no sort needed
        present = np.bincount(flat) > 0
        present[0] = True
        lookup = np.cumsum(present) - 1
        return lookup[flat], int(lookup[-1])
    ids, inverse = np.unique(flat, return_inverse=True)
    offset = 0 if ids[0] == 0 else 1
    return inverse.ravel() + offset, int(ids.size - 1 + offset)


def overlaps(gt_instances: np.ndarray, pred_instances: np.ndarray) -> Overlaps:
    """Contingency table of two instance maps, dense via bincount when small, else sparse."""
    _check_shapes(pred_instances, gt_instances)
    g, n_g = _compact(gt_instances)
    p, n_p = _compact(pred_instances)
    area_g = np.bincount(g, minlength=n_g + 1)[1:]
    area_p = np.bincount(p, minlength=n_p + 1)[1:]
    both = (g > 0) & (p > 0)
    key = (g[both] - 1) * n_p + (p[both] - 1)
    if n_g * n_p <= DENSE_TABLE_MAX_CELLS:
        counts = np.bincount(key, minlength=n_g * n_p)
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(key, return_counts=True)
    return Overlaps(area_g, area_p, keys // max(n_p, 1), keys % max(n_p, 1), inter.astype(np.int64))


def _ratio(inter: int, union: int) -> float:
    return 1.0 if union == 0 else inter / union


def aji(gt_instances: np.ndarray, pred_instances: np.ndarray) -> float:
    """Aggregated Jaccard Index as the MoNuSeg organisers define it.

    Each ground-truth G takes the touching prediction P of largest IoU (ties: lowest P id) and
    adds |G∩P| to I and |G∪P| to U; a G touching nothing adds |G| to U; every P never chosen
    adds its area to U. A P may be chosen by several G, so its pixels can count in U more than once.
    """
    ov = overlaps(gt_instances, pred_instances)
    if ov.pair_gt.size:
        # Sort pairs by gt, then IoU descending, then pred id; the first of each gt is its best.
        order = np.lexsort((ov.pair_pred, -ov.pair_iou, ov.pair_gt))
        first = np.ones(order.size, dtype=bool)
        first[1:] = ov.pair_gt[order][1:] != ov.pair_gt[order][:-1]
        best = order[first]
    else:
        best = np.zeros(0, dtype=np.int64)
    inter = int(ov.pair_inter[best].sum())
    union = int(ov.pair_union[best].sum())
    matched_g = np.zeros(ov.area_gt.size, dtype=bool)
    matched_g[ov.pair_gt[best]] = True
    used_p = np.zeros(ov.area_pred.size, dtype=bool)
    used_p[ov.pair_pred[best]] = True
    union += int(ov.area_gt[~matched_g].sum()) + int(ov.area_pred[~used_p].sum())
    return _ratio(inter, union)


def aji_plus(gt_instances: np.ndarray, pred_instances: np.ndarray) -> float:
    """AJI+ : one-to-one matching maximising total IoU (Hungarian), so no P is counted twice.

    Pairs the assignment makes with IoU 0 are dropped; every unpaired G and P adds its area to U.
    Only instances that overlap something enter the assignment; the rest are unpaired anyway.
    """
    ov = overlaps(gt_instances, pred_instances)
    inter, union = 0, 0
    paired_g = np.zeros(ov.area_gt.size, dtype=bool)
    paired_p = np.zeros(ov.area_pred.size, dtype=bool)
    if ov.pair_gt.size:
        rows, g_idx = np.unique(ov.pair_gt, return_inverse=True)
        cols, p_idx = np.unique(ov.pair_pred, return_inverse=True)
        iou_mat = np.zeros((rows.size, cols.size))
        inter_mat = np.zeros((rows.size, cols.size), dtype=np.int64)
        iou_mat[g_idx, p_idx] = ov.pair_iou
        inter_mat[g_idx, p_idx] = ov.pair_inter
        r, c = linear_sum_assignment(iou_mat, maximize=True)
        keep = iou_mat[r, c] > 0
        r, c = r[keep], c[keep]
        gi, pi = rows[r], cols[c]
        inter = int(inter_mat[r, c].sum())
        union = int((ov.area_gt[gi] + ov.area_pred[pi]).sum()) - inter
        paired_g[gi] = True
        paired_p[pi] = True
    union += int(ov.area_gt[~paired_g].sum()) + int(ov.area_pred[~paired_p].sum())
    return _ratio(inter, union)


def _class_counts(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int,
    ignore_in_union: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union summed over every image of the data set."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
    if len(gts) == 0 or num_classes < 1:
        raise ValueError(f"need at least one image and one class, got {len(gts)} and {num_classes}")
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    for pred, gt in zip(preds, gts):
        _check_shapes(pred, gt)
        p = np.asarray(pred).astype(np.int64).ravel()
        g = np.asarray(gt).astype(np.int64).ravel()
        ignored = g == ignore_index
        for name, arr, allowed in (("prediction", p, None), ("ground truth", g, ignored)):
            bad = (arr < 0) | (arr >= num_classes)
            if allowed is not None:
                bad &= ~allowed
            if bad.any():
                raise ValueError(f"{name} holds class {arr[bad][0]} outside 0..{num_classes - 1}")
        conf = np.bincount(g[~ignored] * num_classes + p[~ignored], minlength=num_classes**2)
        conf = conf.reshape(num_classes, num_classes)
        diag = np.diag(conf)
        inter += diag
        union += conf.sum(0) + conf.sum(1) - diag
        if ignore_in_union:
            union += np.bincount(p[ignored], minlength=num_classes)
    return inter, union


def per_class_iou(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int = 255,
    ignore_in_union: bool = False,
) -> np.ndarray:
    """IoU of each class pooled over the data set: I/(U+1e-8), as ddpm-segmentation.

    A class absent from every prediction and ground truth scores 0, which is what the published
    mIoU does. Pixels whose ground truth is ignore_index are left out; with
    ignore_in_union=True they still enter the union of the class predicted there, which is what
    ddpm-segmentation's compute_iou does (identical results when no pixel is ignored).
    """
    inter, union = _class_counts(preds, gts, num_classes, ignore_index, ignore_in_union)
    return inter / (union + MIOU_EPS)


def miou(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int = 255,
    ignore_in_union: bool = False,
) -> float:
    """Mean over ALL classes (background included) of the pooled per-class IoU."""
    return float(per_class_iou(preds, gts, num_classes, ignore_index, ignore_in_union).mean())


def binary_scores(
    pred_semantic: np.ndarray,
    gt_semantic: np.ndarray,
    gt_instances: np.ndarray | None = None,
) -> dict[str, float]:
    """Per-image scores of a 2-class medical prediction, as the harness records them (the data
    set's are their means, and `iou_paper` of the mean `dice_paper`: bench.evaluate).

    The prediction has no instance ids, so its instances are the connected components of its
    foreground (4-connectivity) when the instance-level AJI and AJI+ are asked for.
    """
    scores = {
        "dice": dice(pred_semantic, gt_semantic),
        "iou": iou(pred_semantic, gt_semantic),
        "dice_paper": dice_paper(pred_semantic, gt_semantic),
        "aji_paper": aji_paper(pred_semantic, gt_semantic),
    }
    if gt_instances is not None:
        _check_shapes(pred_semantic, gt_instances)
        pred_instances = instances_from_mask(pred_semantic)
        scores["aji"] = aji(gt_instances, pred_instances)
        scores["aji_plus"] = aji_plus(gt_instances, pred_instances)
    return scores
