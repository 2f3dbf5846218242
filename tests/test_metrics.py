"""Metrics against hand arithmetic and against slow, obviously-correct reference loops."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from bench import metrics
from bench.metrics import (
    aji,
    aji_paper,
    aji_plus,
    binary_scores,
    dice,
    dice_paper,
    instances_from_mask,
    iou,
    iou_paper,
    miou,
    per_class_iou,
)

# ---------------------------------------------------------------- slow references


def _ref_aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """The organisers' AJI written as loops over instances, one full-image mask at a time."""
    inter = union = 0
    used: set[int] = set()
    p_ids = [int(i) for i in np.unique(pred) if i != 0]
    for g_id in (int(i) for i in np.unique(gt) if i != 0):
        g = gt == g_id
        best, best_iou = None, 0.0
        for p_id in p_ids:
            p = pred == p_id
            i, u = int((g & p).sum()), int((g | p).sum())
            if i > 0 and i / u > best_iou:  # strict: the lowest id wins ties
                best, best_iou = p_id, i / u
        if best is None:
            union += int(g.sum())
        else:
            p = pred == best
            inter += int((g & p).sum())
            union += int((g | p).sum())
            used.add(best)
    union += sum(int((pred == p_id).sum()) for p_id in p_ids if p_id not in used)
    return 1.0 if union == 0 else inter / union


def _brute_aji_plus(gt: np.ndarray, pred: np.ndarray) -> set[float]:
    """AJI+ of every one-to-one matching of maximal total IoU (several when IoU sums tie)."""
    g_ids = [i for i in np.unique(gt) if i != 0]
    p_ids = [i for i in np.unique(pred) if i != 0]
    gm = [gt == i for i in g_ids]
    pm = [pred == i for i in p_ids]
    inter = np.array([[int((g & p).sum()) for p in pm] for g in gm]).reshape(len(gm), len(pm))
    uni = np.array([[int((g | p).sum()) for p in pm] for g in gm]).reshape(len(gm), len(pm))
    ious = np.divide(inter, uni, out=np.zeros(inter.shape), where=uni > 0)
    n_g, n_p = len(gm), len(pm)
    if n_g <= n_p:
        matchings = [list(zip(range(n_g), q)) for q in itertools.permutations(range(n_p), n_g)]
    else:
        matchings = [list(zip(q, range(n_p))) for q in itertools.permutations(range(n_g), n_p)]
    totals = [sum(ious[a, b] for a, b in m) for m in matchings]
    top = max(totals, default=0.0)
    results = set()
    for m, total in zip(matchings, totals):
        if total < top - 1e-12:
            continue
        pairs = [(a, b) for a, b in m if ious[a, b] > 0]
        i = sum(inter[a, b] for a, b in pairs)
        u = sum(uni[a, b] for a, b in pairs)
        u += sum(int(gm[a].sum()) for a in range(len(gm)) if a not in {x for x, _ in pairs})
        u += sum(int(pm[b].sum()) for b in range(len(pm)) if b not in {y for _, y in pairs})
        results.add(round(1.0 if u == 0 else i / u, 12))
    return results


def _ref_per_class_iou(preds, gts, num_classes, ignore_index=255, ignore_in_union=False):
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for c in range(num_classes):
        for p, g in zip(preds, gts):
            valid = np.ones(g.shape, bool) if ignore_in_union else g != ignore_index
            inter[c] += ((p == c) & (g == c) & valid).sum()
            union[c] += (((p == c) | (g == c)) & valid).sum()
    return inter / (union + 1e-8)


def _random_instances(
    rng: np.random.Generator, shape: tuple[int, int], n: int, id_scale: int = 1
) -> np.ndarray:
    """Random rectangles painted in order (later ones overwrite), ids scaled to be sparse."""
    out = np.zeros(shape, np.int64)
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, shape[0] // 2 + 1), rng.integers(1, shape[1] // 2 + 1)
        out[y : y + h, x : x + w] = k * id_scale
    return out


# ---------------------------------------------------------------- case A (hand computed)
# 4 x 6 image.  G1 = rows 0-1 cols 0-1 (4 px), G2 = rows 0-1 cols 2-3 (4 px),
# G3 = row 3 cols 4-5 (2 px).  P1 = rows 0-1 cols 1-2 (4 px), P2 = row 3 cols 0-1 (2 px).
GT_A = np.zeros((4, 6), np.int64)
GT_A[0:2, 0:2], GT_A[0:2, 2:4], GT_A[3, 4:6] = 1, 2, 3
PRED_A = np.zeros((4, 6), np.int64)
PRED_A[0:2, 1:3], PRED_A[3, 0:2] = 1, 2


def test_dice_iou_hand_case() -> None:
    # fg(G) = 10 px, fg(P) = 6 px, overlap = P1's 4 px -> Dice 8/16, IoU 4/(10+6-4) = 1/3
    assert dice(PRED_A, GT_A) == pytest.approx(0.5)
    assert iou(PRED_A, GT_A) == pytest.approx(1 / 3)


def test_aji_paper_is_foreground_iou() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        p, g = rng.integers(0, 3, (9, 7)), rng.integers(0, 2, (9, 7))
        assert aji_paper(p, g) == iou(p, g)


def test_aji_one_prediction_chosen_by_two_gt() -> None:
    # G1 and G2 both pick P1 (IoU 2/6 each): I = 2+2, U = 6+6 (P1 counted twice);
    # G3 touches nothing: U += 2; P2 never chosen: U += 2.  AJI = 4/16.
    assert aji(GT_A, PRED_A) == pytest.approx(0.25)


def test_aji_plus_pairs_one_to_one() -> None:
    # Only one of G1/G2 can have P1: I = 2, U = 6 + 4 (other G) + 2 (G3) + 2 (P2) = 14.
    assert aji_plus(GT_A, PRED_A) == pytest.approx(2 / 14)


def test_aji_picks_largest_iou_not_largest_overlap() -> None:
    # G = row 0 cols 0-9 (10 px).  P1 = rows 0-1 cols 0-5 (12 px): I 6, U 16, IoU .375.
    # P2 = row 0 cols 6-9 (4 px): I 4, U 10, IoU .4 -> chosen.  P1 unused adds 12: 4/22.
    gt = np.zeros((2, 10), np.int64)
    gt[0, :] = 1
    pred = np.zeros((2, 10), np.int64)
    pred[0:2, 0:6], pred[0, 6:10] = 1, 2
    assert aji(gt, pred) == pytest.approx(4 / 22)
    # One-to-one with max total IoU also takes P2 (.4 > .375): same numbers.
    assert aji_plus(gt, pred) == pytest.approx(4 / 22)


@pytest.mark.parametrize("fn", [aji, aji_plus])
def test_instance_metric_edge_cases(fn) -> None:
    empty = np.zeros((5, 5), np.int64)
    left, right = empty.copy(), empty.copy()
    left[:, :2], right[:, 3:] = 1, 7
    assert fn(empty, empty) == 1.0  # nothing to find, nothing predicted
    assert fn(empty, left) == 0.0
    assert fn(left, empty) == 0.0
    assert fn(left, right) == 0.0  # no overlap: I = 0
    assert fn(left, left * 5) == 1.0  # ids need not match, only pixels


def test_binary_edge_cases() -> None:
    empty, full = np.zeros((3, 3)), np.ones((3, 3))
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert dice(full, empty) == iou(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert dice(full * 4, full > 0) == 1.0  # any nonzero value is foreground


@pytest.mark.parametrize("fn", [dice, iou, dice_paper, aji_paper, aji, aji_plus])
def test_shape_mismatch_names_both_shapes(fn) -> None:
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)|\(5, 4\).*\(4, 5\)"):
        fn(np.zeros((4, 5), np.int64), np.zeros((5, 4), np.int64))


def test_negative_instance_ids_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        aji(-np.ones((2, 2), np.int64), np.ones((2, 2), np.int64))


def test_aji_matches_reference_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        gt = _random_instances(rng, (20, 24), int(rng.integers(0, 9)))
        scale = 1000 if trial % 2 else 1  # sparse ids exercise the relabelling
        pred = _random_instances(rng, (20, 24), int(rng.integers(0, 9)), id_scale=scale)
        assert aji(gt, pred) == pytest.approx(_ref_aji(gt, pred), abs=1e-12)


def test_aji_handles_scattered_instances_like_reference() -> None:
    # Instance ids whose pixels are not connected are still one instance each.
    rng = np.random.default_rng(1)
    for _ in range(30):
        gt, pred = rng.integers(0, 5, (10, 10)), rng.integers(0, 6, (10, 10))
        assert aji(gt, pred) == pytest.approx(_ref_aji(gt, pred), abs=1e-12)


def test_aji_plus_matches_brute_force_on_tiny_maps() -> None:
    rng = np.random.default_rng(2)
    for _ in range(60):
        gt = _random_instances(rng, (8, 8), int(rng.integers(0, 5)))
        pred = _random_instances(rng, (8, 8), int(rng.integers(0, 5)), id_scale=3)
        assert round(aji_plus(gt, pred), 12) in _brute_aji_plus(gt, pred)


def test_aji_plus_never_exceeds_one_and_differs_from_aji_when_shared() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        gt, pred = _random_instances(rng, (16, 16), 6), _random_instances(rng, (16, 16), 4)
        assert 0.0 <= aji_plus(gt, pred) <= 1.0
    assert aji(GT_A, PRED_A) != aji_plus(GT_A, PRED_A)


def test_sparse_table_path_agrees_with_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    pairs = [
        (_random_instances(rng, (24, 24), 8), _random_instances(rng, (24, 24), 8, 99999))
        for _ in range(10)
    ]
    dense = [(aji(g, p), aji_plus(g, p)) for g, p in pairs]
    monkeypatch.setattr(metrics, "DENSE_TABLE_MAX_CELLS", 0)
    assert [(aji(g, p), aji_plus(g, p)) for g, p in pairs] == dense


def test_instances_from_mask_connectivity() -> None:
    # Two diagonal pixels plus an isolated pixel: 3 components with 4-, 2 with 8-connectivity.
    mask = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 9]])
    four = instances_from_mask(mask)
    assert four.dtype == np.int64 and four.max() == 3 and (four[mask == 0] == 0).all()
    assert instances_from_mask(mask, connectivity=2).max() == 2
    with pytest.raises(ValueError, match="connectivity"):
        instances_from_mask(mask, connectivity=3)


def test_aji_is_fast_on_monuseg_sized_maps() -> None:
    # 1000 x 1000 with ~1000 square nuclei per map, as a MoNuSeg test image.
    rng = np.random.default_rng(6)
    maps = []
    for _ in range(2):
        m = np.zeros((1000, 1000), np.int64)
        for k, (y, x) in enumerate(rng.integers(0, 990, (1000, 2)), start=1):
            m[y : y + 10, x : x + 10] = k
        maps.append(m)
    start = time.perf_counter()
    a, b = aji(*maps), aji_plus(*maps)
    assert time.perf_counter() - start < 1.0
    assert 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0


# ---------------------------------------------------------------- mIoU
# Two 2x2 images, 3 classes, 255 = ignore.
PREDS = [np.array([[0, 1], [1, 1]]), np.array([[2, 0], [0, 1]])]
GTS = [np.array([[0, 0], [1, 1]]), np.array([[2, 2], [0, 255]])]


def test_miou_hand_case_pools_over_images() -> None:
    # class 0: img1 I1 U2, img2 I1 U2 -> 2/4;  class 1: img1 I2 U3, img2 only an ignored px -> 2/3
    # class 2: img2 I1 U2 -> 1/2.  mean = (1/2 + 2/3 + 1/2) / 3 = 5/9.
    assert per_class_iou(PREDS, GTS, 3) == pytest.approx([0.5, 2 / 3, 0.5])
    assert miou(PREDS, GTS, 3) == pytest.approx(5 / 9)
    # ddpm-segmentation counts the ignored pixel (pred 1) in class 1's union: 2/4 -> mean 1/2.
    assert miou(PREDS, GTS, 3, ignore_in_union=True) == pytest.approx(0.5)


def test_miou_absent_class_counts_as_zero() -> None:
    # Class 3 never appears: IoU 0/(0+1e-8) = 0, still in the mean over all 4 classes.
    assert per_class_iou(PREDS, GTS, 4)[3] == 0.0
    assert miou(PREDS, GTS, 4) == pytest.approx((5 / 3) / 4)


@pytest.mark.parametrize("ignore_in_union", [False, True])
def test_miou_matches_per_class_loop(ignore_in_union: bool) -> None:
    rng = np.random.default_rng(7)
    preds = [rng.integers(0, 5, (12, 9)) for _ in range(4)]
    gts = [np.where(rng.random((12, 9)) < 0.1, 255, rng.integers(0, 5, (12, 9))) for _ in range(4)]
    expected = _ref_per_class_iou(preds, gts, 5, ignore_in_union=ignore_in_union)
    assert per_class_iou(preds, gts, 5, ignore_in_union=ignore_in_union) == pytest.approx(expected)
    assert miou(preds, gts, 5, ignore_in_union=ignore_in_union) == pytest.approx(expected.mean())


def test_miou_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        miou([np.array([[3]])], [np.array([[0]])], 3)
    with pytest.raises(ValueError, match="outside"):
        miou([np.array([[0]])], [np.array([[7]])], 3)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        miou(PREDS, GTS[:1], 3)
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(1, 2\)"):
        miou([PREDS[0]], [np.array([[0, 1]])], 3)


# ---------------------------------------------------------------- per-image dict


def test_binary_scores_with_and_without_instances() -> None:
    assert set(binary_scores(PRED_A > 0, GT_A > 0)) == {"dice", "iou", "dice_paper", "aji_paper"}
    scores = binary_scores((PRED_A > 0).astype(np.uint8), (GT_A > 0).astype(np.uint8), GT_A)
    assert scores["dice"] == pytest.approx(0.5) and scores["aji_paper"] == pytest.approx(1 / 3)
    # Prediction components are exactly P1 and P2 of case A, so the instance metrics match it.
    assert scores["aji"] == pytest.approx(0.25)
    assert scores["aji_plus"] == pytest.approx(2 / 14)


def test_binary_scores_splits_touching_glands_only_by_gt() -> None:
    # A prediction that merges two touching glands is perfect by foreground IoU, not by AJI.
    gt = np.zeros((4, 8), np.int64)
    gt[:, :4], gt[:, 4:] = 1, 2
    scores = binary_scores(gt > 0, gt > 0, gt)
    assert scores["iou"] == 1.0
    # Both G pick the merged P (16 px each): I = 16+16, U = 32+32 -> 0.5; AJI+: I 16, U 32+16.
    assert scores["aji"] == pytest.approx(0.5)
    assert scores["aji_plus"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- the paper's own scores


def _official_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """The paper's GlaS score restated: its `numS == 0 & numG == 0` is `numS == 0` (Python binds `&`
    before `==` and chains the comparisons), so an empty prediction scores 1; else, on binary maps,
    2|P∩G| / (|P| + |G|)."""
    n_s, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_s == (0 & n_g) == 0:
        return 1.0
    return 2 * int(np.count_nonzero((pred != 0) & (gt != 0))) / (n_s + n_g)


EMPTY, FULL = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
HALF = np.zeros((4, 4), np.uint8)
HALF[:2] = 1


@pytest.mark.parametrize(("pred", "gt", "expected"), [
    (EMPTY, FULL, 1.0),    # empty prediction, glands in the ground truth: 1 (the quirk)
    (EMPTY, EMPTY, 1.0),
    (FULL, EMPTY, 0.0),    # a prediction where nothing is: 0
    (HALF, FULL, 2 * 8 / (8 + 16)),
    (FULL, HALF, 2 * 8 / (16 + 8)),
    (HALF, 1 - HALF, 0.0),
])
def test_dice_paper_scores_an_empty_prediction_one(pred: np.ndarray, gt: np.ndarray, expected: float) -> None:
    assert dice_paper(pred, gt) == pytest.approx(expected) == _official_dice(pred, gt)
    assert dice_paper(pred, gt) == (1.0 if not pred.any() else dice(pred, gt))


def test_dice_paper_matches_the_restated_formula_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        pred = (rng.random((9, 7)) < rng.choice([0.0, 0.05, 0.5])).astype(np.uint8)
        gt = (rng.random((9, 7)) < rng.choice([0.0, 0.3])) * rng.integers(1, 4)  # instance ids count as foreground
        assert dice_paper(pred, gt) == pytest.approx(_official_dice(pred, gt))


def test_evaluate_reports_the_papers_scores_beside_the_plain_ones() -> None:
    from bench.data.types import Dataset, Sample
    from bench.evaluate import evaluate

    gts = [FULL, HALF, FULL]
    preds = [EMPTY, HALF, HALF]
    samples = [Sample(name=f"im{i}", image=np.zeros((4, 4, 3), np.uint8), semantic=g.astype(np.int64))
               for i, g in enumerate(gts)]
    test = Dataset(name="toy", split="test", samples=samples, num_classes=2, domain="medical")
    scores, per_image = evaluate(test, preds)
    d = [1.0, 1.0, 2 * 8 / (8 + 16)]  # the empty prediction scores 1 here, 0 by plain Dice
    assert [per_image[f"im{i}"]["dice_paper"] for i in range(3)] == pytest.approx(d)
    assert scores["dice_paper"] == pytest.approx(np.mean(d))
    assert scores["iou_paper"] == pytest.approx(np.mean(d) / (2 - np.mean(d)))  # of the mean Dice
    assert scores["iou_paper"] != pytest.approx(np.mean([x / (2 - x) for x in d]))  # not a mean of IoUs
    assert scores["dice"] == pytest.approx(np.mean([0.0, 1.0, 2 * 8 / 24]))
    assert scores["aji_paper"] == pytest.approx(np.mean([0.0, 1.0, 0.5]))  # MoNuSeg's: per-image foreground IoU
    assert iou_paper(1.0) == 1.0 and iou_paper(0.0) == 0.0
