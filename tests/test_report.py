"""`bench report`: one self-contained HTML page of the tables, figures and provenance so far.

A real (shrunk) experiment runs once on synthetic-glands; beside it lie a folder no experiment
registers and a record from another machine that the experiment did not read. The page is parsed
with html.parser, then opened in headless Chromium to check that it renders and its figures decode.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import load_config
from bench.experiments import EXPERIMENTS, Experiment, ExperimentContext, experiment
from bench.experiments.base import Variant
from bench.report import CFG, experiment_records, result_html, write_report
from tests.conftest import sweep_toml, write_sweep

DEMO = "report-demo"
SWEEP = sweep_toml(["unet"], params={"unet": {"max_epochs": 1, "steps_per_epoch": 2}})
EVIL = "<script>alert(1)</script>"
SWEEP_FIGURES = ("scores", "curves", "qualitative")  # what the `sweep` experiment draws for any sweep
LONG = CFG.long_table_rows + 5  # rows of a per-seed CSV: more than a table shows unfolded


class _Demo(Experiment):
    """A one-cell experiment that writes a table (best bold, a significance mark) and a figure."""

    name = DEMO
    title = "Demo table & <figure>"

    def runs(self, ctx: ExperimentContext) -> list:
        return ctx.specs(Variant("U-Net", "unet"), "synthetic-glands", 1.0)

    def write(self, ctx: ExperimentContext) -> list[Path]:
        """The way the paper's experiments write: tables.py for the table, figures.py for the figure."""
        from matplotlib.figure import Figure

        from bench.experiments.figures import save_figure
        from bench.experiments.tables import ResultTable, collect, write_tables

        values = collect(ctx, {("U-Net", "Dice"): self.runs(ctx)}, {"Dice": "dice"})
        files = write_tables(ResultTable(rows=["U-Net"], columns=["Dice"], values=values), ctx)
        fig = Figure(figsize=(2, 1.5), dpi=50)
        fig.add_subplot().bar(["U-Net"], [v for seeds in values.values() for v in seeds.values()])
        return files + list(save_figure(fig, ctx, "dice"))


if DEMO not in EXPERIMENTS:
    experiment(_Demo)


class _Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.strong: list[str] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.scripts = self.details = 0
        self._cell: list[str] | None = None
        self._in_strong = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "strong":
            self._in_strong = True
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "details":
            self.details += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "strong":
            self._in_strong = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_strong:
            self.strong.append(data)

    def cells(self) -> list[str]:
        return [c for t in self.tables for row in t for c in row]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run through `bench experiment`, a foreign folder and record, then `bench report`."""
    folder = tmp_path_factory.mktemp("report")
    config = write_sweep(folder, SWEEP)
    assert main(["experiment", DEMO, "--config", str(config), "--quiet"]) == 0
    assert main(["experiment", "sweep", "--config", str(config), "--quiet", "--no-run"]) == 0  # what `bench run` draws
    results = folder / "results"
    legacy = results / "legacy"  # no experiment registers it: tables and figures, records unknown
    legacy.mkdir()
    (legacy / "table.csv").write_text(f'method,note\n**best**,"{EVIL}"\n')
    (legacy / "only.pdf").write_bytes(b"%PDF-1.4\n")
    (legacy / "per_seed.csv").write_text("seed,dice\n" + "".join(f"{i},{i / 100}\n" for i in range(LONG)))
    record = json.loads(next((results / "records").glob("*.json")).read_text())
    record.update(run_id="synthetic-glands-f1-unet-s7-foreign", seed=7)
    record["provenance"].update(git={"commit": "f" * 40, "dirty": True}, device="cuda:0", gpu="NVIDIA H100",
                                host="elsewhere")
    record["timings"]["total_s"] = 3600.0
    (results / "records" / f"{record['run_id']}.json").write_text(json.dumps(record))
    assert main(["report", "--config", str(config)]) == 0
    return results / "report.html"


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.mark.slow
def test_tables_figures_and_contents(report: Path) -> None:
    page = _parse(report)
    assert {f"exp-{DEMO}", "exp-legacy", "exp-sweep", "all-records"} <= set(page.ids)
    text = report.read_text()
    assert "Demo table &amp; &lt;figure&gt;" in text  # the registered title, escaped
    demo = next(t for t in page.tables if t[0] == ["method", "Dice"])  # table.json of tables.py
    record = json.loads(next((report.parent / "records").glob("*-s0-*.json")).read_text())
    mean = f"{100 * record['metrics']['dice']:.2f} ± n/a"  # one seed: the std is undefined
    assert demo[1] == ["U-Net", f"{mean} (n=1)"] and mean in page.strong and "best" in page.strong
    assert "Ours: mean ± sample std over n seeds" in text  # its footnotes come along
    assert f"{DEMO}/table.tex" in page.links and f"{DEMO}/dice.pdf" in page.links and "legacy/only.pdf" in page.links
    # The demo's PNG and the sweep's three (scores, learning curves, predictions), all embedded.
    assert len(page.imgs) == 1 + len(SWEEP_FIGURES) and all(i.startswith("data:image/png;base64,") for i in page.imgs)
    pngs = [base64.b64decode(i.split(",", 1)[1]) for i in page.imgs]
    assert (report.parent / DEMO / "dice.png").read_bytes() in pngs
    assert all((report.parent / "sweep" / f"{stem}.png").read_bytes() in pngs for stem in SWEEP_FIGURES)
    assert EVIL in page.cells() and page.scripts == 1  # text shown as text, never run
    per_seed = next(t for t in page.tables if t[0] == ["seed", "dice"])
    assert f"<summary>{LONG} rows</summary>" in text and len(per_seed) == LONG + 1 and per_seed[3] == ["2", "0.02"]
    assert page.details == 4  # the long table, and the record lists of the experiment, the sweep and all records
    assert "http://" not in text and "https://" not in text  # self-contained
    assert not list(report.parent.glob(".tmp-*"))


@pytest.mark.slow
def test_provenance_per_experiment_and_overall(report: Path) -> None:
    page = _parse(report)
    summaries = [dict((row[0], row[1]) for row in t) for t in page.tables if t and t[0][0] == "records"]
    assert len(summaries) == 3  # the experiment's records, the sweep's, then all records
    mine, sweep, everything = summaries
    assert sweep["records"] == "1"  # bench.toml's one run: the foreign record is no run of it
    assert mine["records"] == "1" and "elsewhere" not in mine["hosts"] and "ffffffffff" not in mine["commits"]
    assert everything["records"] == "2" and "ffffffffff (dirty) ×1" in everything["commits"]
    assert "cuda:0 (NVIDIA H100) ×1" in everything["devices"] and "torch " in everything["package versions"]
    assert "1:00:" in everything["total wall time"]
    per_record = [t for t in page.tables if t and t[0][0] == "run id"]
    assert [len(t) - 1 for t in per_record] == [1, 1, 2]
    assert "synthetic-glands-f1-unet-s7-foreign" in [row[0] for row in per_record[2]]
    head = ["dataset", "fraction", "method", "preset", "config", "n"]
    aggregate = next(t for t in page.tables if t and t[0][:6] == head)
    assert aggregate[1][:3] == ["synthetic-glands", "1.0", "unet"] and aggregate[1][3:6:2] == ["tiny", "2"]
    assert aggregate[2][:4] == ["synthetic-glands", "1.0", "trivial (reference)", "reference"]
    assert "its files name no runs" in report.read_text()  # the legacy folder: no experiment wrote it


@pytest.mark.slow
def test_records_found_when_run_under_another_preset(report: Path) -> None:
    """The experiment ran on the tiny preset; a sweep now set to paper still finds its records:
    the experiment's files name the runs it read, whatever bench.toml says now."""
    sweep = load_config(report.parent.parent / "bench.toml")
    write_report(replace(sweep, preset="paper"))
    assert "1 of the 1 runs it read have records here" in report.read_text()


def test_the_report_reads_the_runs_an_experiment_names(tmp_path: Path) -> None:
    """From the stem.json files (by file name): a table's `runs` and a figure's, each once; a folder
    whose files name none (an older bench) says so instead of guessing."""
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "table.json").write_text(json.dumps({"kind": "bench-table", "runs": ["a", "b"]}))
    (folder / "figure.json").write_text(json.dumps({"kind": "bench-figure", "runs": ["b", "c"], "notes": []}))
    by_id = {"a": {"run_id": "a"}, "c": {"run_id": "c"}}
    assert experiment_records(folder, by_id) == ("", [by_id["c"], by_id["a"]],
                                                 "2 of the 3 runs it read have records here; 1 are gone from records/")
    for path in folder.iterdir():
        path.write_text("{}")
    title, used, note = experiment_records(folder, by_id)
    assert used == [] and "name no runs" in note and "bench experiment own --no-run" in note


def test_the_report_writes_nothing_but_the_page(tmp_path: Path) -> None:
    """It only reads: no experiment runs, no figure is drawn (the sweep's come from `bench run`)."""
    sweep = load_config(write_sweep(tmp_path, SWEEP))
    record = {"run_id": "x", "dataset": "synthetic-glands", "fraction": 1.0, "method": "unet", "seed": 0,
              "preset": "tiny", "metrics": {"dice": 0.5}, "config": {}, "timings": {"total_s": 1.0},
              "provenance": {}}
    (tmp_path / "results" / "records").mkdir(parents=True)
    (tmp_path / "results" / "records" / "x.json").write_text(json.dumps(record))
    before = set((tmp_path / "results").rglob("*"))
    page = write_report(sweep)
    new = {p.relative_to(tmp_path / "results").parts[0] for p in set((tmp_path / "results").rglob("*")) - before}
    assert new <= {page.name, "reference"}  # the page, and the trivial rows' score cache `bench table` keeps too
    assert not (tmp_path / "results" / "sweep").exists()


def test_bold_best_and_significance_dagger_survive(tmp_path: Path) -> None:
    """From the table's data: the best mean in <strong>, a significant gap keeps its †."""
    from bench.experiments.tables import CFG as TABLES, ResultTable, write_tables
    from bench.tables.cells import table_from_json

    sweep = load_config(write_sweep(tmp_path, SWEEP))
    ctx = ExperimentContext(name="marks", sweep=sweep)
    seeds = range(TABLES.min_pairs + 1)
    values = {("A", "IoU"): {s: 80.0 + s for s in seeds}, ("B|C", "IoU"): {s: 50.0 + s for s in seeds}}
    table = ResultTable(rows=["A", "B|C"], columns=["IoU"], values=values, published={("A", "IoU"): (79.0, 1.0)})
    data = next(p for p in write_tables(table, ctx) if p.suffix == ".json")
    page = _Page()
    page.feed(result_html(table_from_json(json.loads(data.read_text()))))
    assert page.tables[0][0] == ["method", "IoU", "paper", "Δ"]
    assert page.tables[0][1][0] == "A" and page.strong == ["83.00 ± 2.16"]
    assert page.tables[0][2][:2] == ["B|C", f"53.00 ± 2.16{TABLES.mark} (n={len(seeds)})"]


def test_markdown_without_table_data_is_shown_as_text(tmp_path: Path) -> None:
    """Notes someone wrote (or a table from an older bench) are never parsed back into a table."""
    from bench.report import _table_block

    (tmp_path / "notes.md").write_text(f"| a | b |\n|---|---|\n| **1** | {EVIL} |\n")
    block = _table_block(tmp_path, "notes")
    assert "<pre>" in block and "<table>" not in block and "<strong>" not in block and EVIL not in block


def test_missing_output_folder_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, SWEEP)
    assert main(["report", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bench: error: {config}: output:") and "\n" not in err


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    n = 1 + len(SWEEP_FIGURES)
    assert 'data-images-ok="true"' in dom.stdout and f'data-images-loaded="{n}/{n}"' in dom.stdout
    rendered = _Page()
    rendered.feed(dom.stdout)
    assert ["method", "Dice"] in [t[0] for t in rendered.tables] and EVIL in rendered.cells()
    shot = tmp_path / "shot.png"
    run = _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1000,800", report.as_uri())
    assert run.returncode == 0 and shot.stat().st_size > 0

    from PIL import Image

    assert len(Image.open(shot).convert("L").getcolors(maxcolors=1 << 16) or range(2)) > 1  # not blank


@pytest.mark.slow
def test_chromium_flags_a_figure_that_does_not_decode(report: Path, tmp_path: Path) -> None:
    """The onload check is not vacuous: a corrupt PNG makes the page say so."""
    chromium = _chromium()
    broken = tmp_path / "broken.html"
    text = report.read_text()
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(text[:start] + base64.b64encode(b"not a png").decode() + text[text.index('"', start):])
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", broken.as_uri())
    n = 1 + len(SWEEP_FIGURES)
    assert 'data-images-ok="false"' in dom.stdout and f'data-images-loaded="{n - 1}/{n}"' in dom.stdout


def test_the_sweep_figures_use_the_runs_bench_run_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench run` hands its expanded runs on: the sweep's figures never expand the sweep again."""
    import bench.experiments.sweep as sweep_experiment
    from bench.experiments.base import run_experiment
    from bench.runner import expand

    sweep = load_config(write_sweep(tmp_path, SWEEP))
    runs = expand(sweep)

    def again(_: object) -> None:
        raise AssertionError("the sweep was expanded again")

    monkeypatch.setattr(sweep_experiment, "expand", again)
    code, _ = run_experiment("sweep", sweep, quiet=True, run_missing=False, sweep_runs=runs)
    assert code == 0
    with pytest.raises(AssertionError, match="expanded again"):
        run_experiment("sweep", sweep, quiet=True, run_missing=False)
