"""Run identity by the data's content: two roots holding the same files share records, a changed
file gets ids of its own (orphaning nothing, never mixed), `bench records migrate` moves records of
the path-based ids, and the committed records are found by the committed sweep."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import registry
from bench.cli import main
from bench.config import load_config
from bench.data import fingerprint as fp
from bench.errors import DataError
from bench.protocol import identity_of
from bench.provenance import SHORT_HASH, config_hash
from bench.runner import RunSpec, expand
from bench.store import atomic_write_json
from tests.conftest import REPO, sweep_toml, write_sweep

H, W = 16, 20


@pytest.fixture(autouse=True)
def _fresh_fingerprints() -> Any:
    """Each test sees its files as they are now (a process remembers a root's fingerprint)."""
    fp.clear_cache()
    yield
    fp.clear_cache()


def write_glas(root: Path, n_train: int = 4, n_test: int = 2) -> Path:
    """A tiny GlaS folder in the release layout (train_N, testA_N with their _anno maps)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in [f"train_{i}" for i in range(1, n_train + 1)] + [f"testA_{i}" for i in range(1, n_test + 1)]:
        anno = np.zeros((H, W), np.uint8)
        anno[2:9, 3:11], anno[10:14, 12:18] = 1, 2
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / f"{stem}.png")
        Image.fromarray(anno).save(root / f"{stem}_anno.png")
    return root


def copy_of(src: Path, dst: Path) -> Path:
    """A copy as `cp -r` makes it: same files, new mtimes."""
    shutil.copytree(src, dst, copy_function=shutil.copy)
    return dst


def change_one_pixel(path: Path) -> None:
    image = np.asarray(Image.open(path)).copy()
    image[0, 0, 0] ^= 0xFF
    Image.fromarray(image).save(path)
    fp.clear_cache()  # as a new process would see it


def write_record(spec: RunSpec, dice: float, labelled: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A record as `runner.execute` writes it (the fields tables and migration read)."""
    record = {"run_id": spec.run_id, "dataset": spec.dataset, "root": spec.root, "data": spec.data,
              "fraction": spec.fraction, "method": spec.method, "kind": "supervised", "seed": spec.seed,
              "preset": spec.preset, "config": dataclasses.asdict(spec.config), "params": spec.params,
              "labelled": labelled if labelled is not None else [f"train_{spec.seed}"],
              "metrics": {"dice": dice}, "timings": {"total_s": 1.0},
              "provenance": {"config_hash": spec.config_hash, "seed": spec.seed}, **extra}
    atomic_write_json(spec.record_path, record)
    return record


def csv_table(capsys: pytest.CaptureFixture, *args: str) -> pd.DataFrame:
    capsys.readouterr()
    assert main(["table", *args, "--format", "csv"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"config": str})


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    write_glas(tmp_path / "a")
    return write_sweep(tmp_path, sweep_toml(["unet"], seeds=(0, 1), dataset="glas", root="a", output="out"))


# --- the fingerprint ------------------------------------------------------------------------------
def test_a_fingerprint_is_the_files_content_not_their_place_or_mtimes(tmp_path: Path, monkeypatch) -> None:
    a = write_glas(tmp_path / "a")
    b = copy_of(a, tmp_path / "b")
    assert fp.fingerprint("glas", a) == fp.fingerprint("glas", b) == fp.fingerprint("glas-val", str(b))
    (b / ".DS_Store").write_bytes(b"hidden")
    fp.clear_cache()
    assert fp.fingerprint("glas", b) == fp.fingerprint("glas", a)  # hidden names do not count
    (b / "Grade.csv").write_text("name,grade\n")  # every other file does, read or not
    fp.clear_cache()
    assert fp.fingerprint("glas", b) != fp.fingerprint("glas", a)
    (b / "Grade.csv").unlink()
    (b / "testA_2.png").rename(b / "testA_3.png")
    fp.clear_cache()
    assert fp.fingerprint("glas", b) != fp.fingerprint("glas", a)  # names count
    assert fp.fingerprint("synthetic-glands", None) == fp.fingerprint("synthetic-glands", str(tmp_path))
    with pytest.raises(DataError, match="no such data folder"):
        fp.fingerprint("glas", tmp_path / "nowhere")


def test_each_file_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    root = write_glas(tmp_path / "a")
    hashed: list[str] = []
    digest = fp._digest
    monkeypatch.setattr(fp, "_digest", lambda path, chunk: hashed.append(path.name) or digest(path, chunk))
    first = fp.fingerprint("glas", root)
    assert len(hashed) == 12
    fp.clear_cache()  # a new process: the digests come from the cache in $BENCH_CACHE
    assert fp.fingerprint("glas", root) == first and len(hashed) == 12
    change_one_pixel(root / "train_1.png")
    assert fp.fingerprint("glas", root) != first and hashed[12:] == ["train_1.png"]


# --- records that travel --------------------------------------------------------------------------
def test_two_roots_with_the_same_files_share_records_and_a_changed_file_is_never_mixed(
        sweep: Path, tmp_path: Path, capsys) -> None:
    runs = expand(load_config(sweep))
    for spec in runs:
        write_record(spec, 0.80 + 0.01 * spec.seed)
    b = copy_of(tmp_path / "a", tmp_path / "b")
    at_b = ["--config", str(sweep), "--set", f"datasets.0.root={b}"]

    table = csv_table(capsys, *at_b)  # the same files elsewhere: the same records
    row = table[~table["reference"]].iloc[0]
    assert row["n"] == 2 and row["dice_mean"] == pytest.approx(80.5)
    assert main(["run", *at_b, "--dry-run"]) == 0
    assert "all 2 runs are done" in capsys.readouterr().out

    change_one_pixel(b / "testA_1.png")  # b's data differs now: none of a's records is b's
    capsys.readouterr()
    assert main(["table", *at_b]) == 1
    assert "no records of this configuration" in capsys.readouterr().err
    assert main(["run", *at_b, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would run") == 2
    changed = expand(load_config(sweep, [f"datasets.0.root={b}"]))
    assert not {s.run_id for s in changed} & {s.run_id for s in runs}

    table = csv_table(capsys, "--config", str(sweep))  # orphans nothing: a's records are still a's
    assert table[~table["reference"]]["n"].tolist() == [2]
    write_record(changed[0], 0.50)
    table = csv_table(capsys, *at_b)
    own = table[~table["reference"]]
    assert own["n"].tolist() == [1] and own["dice_mean"].tolist() == [pytest.approx(50.0)]
    every = csv_table(capsys, *at_b, "--all")  # both, in rows of their own
    runs_rows = every[~every["reference"]].sort_values("n")
    assert runs_rows["n"].tolist() == [1, 2]
    assert runs_rows["dice_mean"].tolist() == [pytest.approx(50.0), pytest.approx(80.5)]
    assert len(set(runs_rows["config"])) == 2


def test_the_spec_builds_its_config_once_and_replace_never_reuses_it(tmp_path: Path, monkeypatch) -> None:
    from bench.plugin import Plugin

    calls = []
    resolve = Plugin.resolve_config.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Plugin, "resolve_config",
                        classmethod(lambda cls, *a, **k: calls.append(cls.name) or resolve(cls, *a, **k)))
    spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method="unet", seed=0, preset="tiny",
                   output=str(tmp_path))
    ids = {spec.run_id, spec.config_hash, spec.record_path.stem}
    spec.plugin(), spec.plugin(), spec.resolved_config(), spec.artefacts()
    assert calls == ["unet"] and len(ids) == 2
    other = dataclasses.replace(spec, params={"max_epochs": 2})
    assert other.config.max_epochs == 2 and other.run_id != spec.run_id and calls == ["unet", "unet"]
    import pickle

    again = pickle.loads(pickle.dumps(other))  # a Slurm job gets it built
    assert again.run_id == other.run_id and again.config == other.config and len(calls) == 2


# --- bench records migrate -----------------------------------------------------------------------
def legacy(spec: RunSpec, dice: float, root: str | None = None) -> Path:
    """A record as bench wrote it while ids held the data's root path."""
    cfg = dataclasses.asdict(spec.config)
    root = root or spec.root
    old = config_hash({"dataset": spec.dataset, "root": root, "fraction": spec.fraction, "method": spec.method,
                       "preset": spec.preset, "config": cfg})
    run_id = f"{spec.dataset}-f{spec.fraction:g}-{spec.method}-s{spec.seed}-{old[:SHORT_HASH]}"
    path = Path(spec.output) / "records" / f"{run_id}.json"
    atomic_write_json(path, {"run_id": run_id, "dataset": spec.dataset, "root": root, "fraction": spec.fraction,
                             "method": spec.method, "seed": spec.seed, "preset": spec.preset, "config": cfg,
                             "params": spec.params, "metrics": {"dice": dice},
                             "provenance": {"config_hash": old, "seed": spec.seed}})
    return path


def test_migrate_moves_old_records_to_the_ids_a_sweep_expands_to(sweep: Path, tmp_path: Path, capsys) -> None:
    runs = expand(load_config(sweep))
    old = [legacy(s, 0.7 + 0.1 * s.seed) for s in runs]
    pred = tmp_path / "out" / "predictions" / old[0].stem
    pred.mkdir(parents=True)
    (pred / "testA_1.png").write_bytes(b"png")
    odd = tmp_path / "out" / "records" / "glas-f1-unet-s5-0123456789.json"
    atomic_write_json(odd, {"run_id": odd.stem, "metrics": {}, "robustness": {}})
    assert main(["table", "--config", str(sweep)]) == 1  # old ids: not found

    capsys.readouterr()
    assert main(["records", "migrate", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "migrated 2 record(s)" in out.out and "1 left as they are" in out.out and odd.name in out.err
    names = {p.stem for p in (tmp_path / "out" / "records").glob("*.json")}
    assert names == {s.run_id for s in runs} | {odd.stem}
    assert not any(p.exists() for p in old) and odd.exists()
    moved = json.loads(runs[0].record_path.read_text())
    assert moved["data"] == runs[0].data and moved["provenance"]["previous_run_id"] == old[0].stem
    assert moved["provenance"]["config_hash"] == runs[0].config_hash and moved["root"] == runs[0].root
    assert (tmp_path / "out" / "predictions" / runs[0].run_id / "testA_1.png").is_file() and not pred.exists()
    assert csv_table(capsys, "--config", str(sweep))["n"].tolist()[0] == 2
    assert main(["records", "migrate", str(tmp_path / "out")]) == 0
    assert "migrated 0 record(s)" in capsys.readouterr().out  # all current now


def test_a_migration_cut_short_is_finished_by_the_next(sweep: Path, tmp_path: Path, capsys) -> None:
    from bench import migrate

    runs = expand(load_config(sweep))
    old = [legacy(s, 0.7) for s in runs]
    plan = migrate.plan(tmp_path / "out")
    _, new, record = plan.moves[0]
    atomic_write_json(new, record)  # killed after the first new record: both kept, nothing lost
    assert all(p.exists() for p in old) and new.exists()
    assert main(["records", "migrate", str(tmp_path / "out")]) == 0
    assert "migrated 2 record(s)" in capsys.readouterr().out
    assert not any(p.exists() for p in old) and all(s.record_path.exists() for s in runs)


def test_migrate_finds_moved_data_with_root_and_fails_whole_without_it(sweep: Path, tmp_path: Path, capsys) -> None:
    runs = expand(load_config(sweep))
    moved = copy_of(tmp_path / "a", tmp_path / "moved")
    old = [legacy(s, 0.7, root=str(tmp_path / "gone")) for s in runs]
    before = sorted(p.name for p in (tmp_path / "out" / "records").iterdir())
    capsys.readouterr()
    assert main(["records", "migrate", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and old[0].name in err and "root" in err and "--root glas=PATH" in err
    assert sorted(p.name for p in (tmp_path / "out" / "records").iterdir()) == before  # nothing written
    assert main(["records", "migrate", str(tmp_path / "out"), "--root", f"glas={moved}"]) == 0
    assert {p.stem for p in (tmp_path / "out" / "records").glob("*.json")} == {s.run_id for s in runs}


@pytest.mark.parametrize("folder", ["results/glas-small", "results/calibration"])
def test_the_committed_records_are_current(folder: str) -> None:
    """Each names the fingerprint of the GlaS files it was run on, and its id follows from its fields."""
    from bench import migrate

    paths = sorted((REPO / folder / "records").glob("*.json"))
    plan = migrate.plan(REPO / folder)
    assert plan.moves == [] and plan.left == [] and plan.current == len(paths) > 0
    for path in paths:
        r = json.loads(path.read_text())
        fields = {k: r[k] for k in ("dataset", "fraction", "method", "preset")}
        # the identity holds the Config less the fields at their legacy values (bench.protocol)
        fields["config"] = identity_of(registry.get(r["method"]).Config, r["config"])
        rebuilt = config_hash({**fields, "data": r["data"]})
        assert rebuilt == r["provenance"]["config_hash"] and path.stem == migrate.run_id(fields, r["seed"], rebuilt)


def test_the_committed_sweep_finds_every_committed_record(tmp_path: Path, monkeypatch) -> None:
    """Without the data here: its fingerprint, as the records name it, stands in for reading it."""
    import bench.runner

    records = [json.loads(p.read_text()) for p in (REPO / "results/glas-small/records").glob("*.json")]
    (data,) = {r["data"] for r in records}
    monkeypatch.setattr(bench.runner, "fingerprint", lambda dataset, root: data)
    ids = {r["run_id"] for r in records}
    converged, official = ({s.run_id for s in expand(load_config(REPO / "results/glas-small" / name,
                                                                   [f"datasets.0.root={tmp_path}"]))}
                           for name in ("bench.toml", "official.toml"))
    assert not converged & official  # the two protocols never share a run
    assert converged <= ids and ids - converged <= official  # every converged run; the official ones done so far


def test_a_command_reads_the_sweep_once_and_builds_each_config_once(sweep: Path, monkeypatch, capsys) -> None:
    """`bench run` of a 2-run sweep: one resolve per method (the loader's check) and one per run."""
    import bench.config
    from bench.plugin import Plugin

    calls: list[str] = []
    resolve, load = Plugin.resolve_config.__func__, bench.config.load_config  # type: ignore[attr-defined]
    monkeypatch.setattr(Plugin, "resolve_config",
                        classmethod(lambda cls, *a, **k: calls.append("resolve") or resolve(cls, *a, **k)))
    monkeypatch.setattr(bench.config, "load_config", lambda *a, **k: calls.append("load") or load(*a, **k))
    assert main(["run", "--config", str(sweep), "--dry-run"]) == 0
    assert calls == ["load", "resolve", "resolve", "resolve"]
    for spec in expand(load_config(sweep)):
        write_record(spec, 0.8)
    calls.clear()
    assert main(["run", "--config", str(sweep)]) == 0  # all done: then its table, from what it built
    assert calls == ["load", "resolve", "resolve", "resolve"] and "| glas | 1.0 | unet |" in capsys.readouterr().out
