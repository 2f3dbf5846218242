"""`--reference DIR` (read-only records beside the sweep's own, only of its configuration) and
`bench table --rank METHOD` (paired by seed and labelled subset: Wilcoxon, or paired t below 6 pairs)."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import ttest_rel, wilcoxon

from bench.cli import main
from bench.config import load_config
from bench.rank import paired_test, rank
from bench.runner import expand
from tests.conftest import sweep_toml, write_sweep
from tests.test_identity import _fresh_fingerprints, write_glas, write_record  # noqa: F401 (fixture)

SEEDS = tuple(range(7))
# dice per seed: the new method, and two committed ones; unet beats it on every seed, attunet loses on most
NEW = [0.70, 0.72, 0.68, 0.75, 0.71, 0.69, 0.73]
UNET = [0.80, 0.79, 0.81, 0.82, 0.78, 0.80, 0.83]
ATTUNET = [0.60, 0.74, 0.61, 0.66, 0.72, 0.58, 0.64]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A committed-style reference folder (unet, attunet; 7 seeds, 100%) and a sweep of the new method."""
    write_glas(tmp_path / "GlaS")
    ref = tmp_path / "ref"
    committed = write_sweep(tmp_path, sweep_toml(["unet", "attunet"], seeds=SEEDS, dataset="glas", root="GlaS",
                                                  output="ref"))
    for spec in expand(load_config(committed)):
        write_record(spec, (UNET if spec.method == "unet" else ATTUNET)[spec.seed])
    other = load_config(committed, ["preset=small"])  # another preset: never in this sweep's rows
    for spec in expand(other)[:3]:
        write_record(spec, 0.99)
    mine = tmp_path / "mine"
    mine.mkdir()
    config = write_sweep(mine, sweep_toml(["unetpp"], seeds=SEEDS, dataset="glas", root="../GlaS", output="out"))
    for spec in expand(load_config(config)):
        write_record(spec, NEW[spec.seed])
    return config, ref


def _csv(capsys: pytest.CaptureFixture, *args: str) -> pd.DataFrame:
    capsys.readouterr()
    assert main(["table", *args, "--format", "csv"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"config": str})


def test_reference_records_of_the_sweeps_configuration_sit_beside_its_own(setup, capsys) -> None:
    config, ref = setup
    table = _csv(capsys, "--config", str(config), "--reference", str(ref))
    runs = table[~table["reference"]].set_index("method")
    assert set(runs.index) == {"unetpp", "unet", "attunet"} and (runs["n"] == 7).all()
    assert runs.loc["unetpp", "source"] == "sweep" and runs.loc["unet", "source"] == str(ref)
    assert runs.loc["unet", "dice_mean"] == pytest.approx(100 * sum(UNET) / 7)  # no small-preset 0.99 mixed in
    every = _csv(capsys, "--config", str(config), "--reference", str(ref), "--all")
    unet = every[every["method"] == "unet"]
    assert sorted(unet["preset"]) == ["small", "tiny"] and sorted(unet["n"]) == [3, 7]
    assert "unet" not in _csv(capsys, "--config", str(config))["method"].tolist()  # none without --reference


def test_rank_pairs_seeds_and_names_its_test(setup, capsys) -> None:
    config, ref = setup
    table = _csv(capsys, "--config", str(config), "--reference", str(ref), "--rank", "unetpp")
    by = table.set_index("method")
    assert by.loc["unetpp", "rank"] == 2 and by.loc["unetpp", "of"] == 3
    assert by.loc["unet", "rank"] == 1 and by.loc["attunet", "rank"] == 3
    assert by.loc["unet", "test"] == "wilcoxon" and by.loc["unet", "pairs"] == 7
    assert by.loc["unet", "diff"] == pytest.approx(100 * (sum(NEW) - sum(UNET)) / 7)
    expect = wilcoxon([100 * x for x in NEW], [100 * x for x in ATTUNET]).pvalue
    assert by.loc["attunet", "p"] == pytest.approx(expect)
    capsys.readouterr()
    assert main(["table", "--config", str(config), "--reference", str(ref), "--rank", "unetpp"]) == 0
    text = capsys.readouterr().out
    assert "| source |" in text and "unetpp ranked by dice" in text and "| **2 of 3** | **unetpp** | sweep | 7 |" in text


def test_below_six_pairs_the_test_is_a_paired_t(setup, capsys) -> None:
    config, ref = setup
    table = _csv(capsys, "--config", str(config), "--set", "seeds=[0,1,2]", "--reference", str(ref),
                 "--rank", "unetpp")
    unet = table.set_index("method").loc["unet"]  # the reference keeps its 7 seeds; 3 of them pair
    assert unet["test"] == "paired t" and unet["pairs"] == 3
    assert unet["p"] == pytest.approx(ttest_rel([100 * x for x in NEW[:3]], [100 * x for x in UNET[:3]]).pvalue)


def test_a_seed_with_another_labelled_subset_is_not_a_pair() -> None:
    base = {"dataset": "glas", "fraction": 0.1, "metrics": {"dice": 0.5}}
    records = [{**base, "method": "a", "seed": s, "labelled": ["x"]} for s in range(3)]
    records += [{**base, "method": "b", "seed": s, "labelled": ["x" if s else "y"]} for s in range(3)]
    (cell,) = rank(records, "a", "dice")
    (comparison,) = cell.comparisons
    assert comparison.pairs == 2 and comparison.test == "paired t" and comparison.p == 1.0


def test_paired_test_edges() -> None:
    assert paired_test([1.0], [2.0]) == (None, "none (1 pair)")
    assert paired_test([1.0, 2.0], [0.0, 1.0]) == (None, "paired t: constant difference, p undefined")
    p, name = paired_test([float(x) for x in range(6)], [x + 0.5 * (-1) ** x for x in range(6)])
    assert name == "wilcoxon" and 0 < p <= 1


def test_run_with_a_reference_runs_only_the_sweeps_method_and_ranks_it(setup, capsys) -> None:
    config, ref = setup
    capsys.readouterr()
    assert main(["run", "--config", str(config), "--reference", str(ref), "--rank", "unetpp", "-q"]) == 0
    out = capsys.readouterr().out
    assert "all 7 runs are done" in out and "unet" in out and "unetpp ranked by dice" in out
    assert main(["table", "--config", str(config), "--reference", str(config.parent / "nowhere")]) == 2
    assert "no records/ folder" in capsys.readouterr().err


def test_the_report_ranks_the_sweeps_methods_against_the_references(setup, capsys) -> None:
    config, ref = setup
    capsys.readouterr()
    assert main(["report", "--config", str(config), "--reference", str(ref)]) == 0
    page = Path(capsys.readouterr().out.strip()).read_text()
    assert "Against the reference records" in page and "unetpp ranked by dice" in page
    assert "<td><strong>2 of 3</strong></td>" in page and str(ref) in page
