"""The paper's ablations (Tables 3, 4, 6, 7): rows are mdm/ddpm (and mae) with one setting changed.

Each row is a `Variant` whose params override one config field of the plugin; everything else
(bench.toml's `[params.METHOD]`, the preset) stays as in Table 1, so a row with the default
setting is the very run Table 1 made and its record is reused. The columns are the data sets and
label fractions the paper printed (bench.tables.paper.ABLATIONS); a data set without a root in
bench.toml is left out with a note. Each table also gets a small figure: ours beside the paper.

- table3: pre-training at one fixed timestep instead of t ~ U{0..T-1} (`fixed_t`). The fixed t is
  the timestep the features are read at (the config's first `timesteps_medical`: DDPM 250, as in
  REFERENCE §4, where DDPM at fixed t=250 becomes a denoising autoencoder; MDM 50).
- table4: loss and target: DDPM `target` eps|x0 and `loss` mse|ssim, MAE `loss`, MDM `loss`.
- table6: the timestep(s) features are read at (`timesteps_medical`; probe-only, one backbone).
- table7: MDM's mask patch size (`patch`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench import registry
from bench.experiments.base import Experiment, ExperimentContext, Variant, experiment
from bench.experiments.table2 import natural_params
from bench.experiments.tables import (
    Column,
    ResultTable,
    collect,
    column_label,
    grid,
    ordered_runs,
    trivial_references,
    write_tables,
)
from bench.runner import RunSpec
from bench.tables import ABLATIONS, ablation


@dataclass(frozen=True)
class Row:
    """A row: its label, the variant it runs, and the printed row (method, variant) it is compared with."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    printed: str = "default"

    @property
    def variant(self) -> Variant:
        return Variant(self.label, self.method, self.params)


# The printed grids of Tables 6 and 7 (the feature timesteps and patch sizes the paper tried).
FEATURE_TIMESTEPS: tuple[tuple[int, ...], ...] = ((0,), (50,), (150,), (250,), (650,), (50, 150, 250))
PATCH_SIZES: tuple[int, ...] = (4, 8, 16)
MAE_LOSS_NOTE = ("MAE MSE is MAE's own loss (MSE on per-patch normalised pixels, the Table 1 MAE); "
                 "MAE SSIM compares the reconstructed image with SSIM.")


def feature_timestep(ctx: ExperimentContext, method: str) -> int:
    """The (first) timestep `method` reads medical features at, under this sweep's preset and params."""
    cfg = registry.get(method).resolve_config(ctx.sweep.preset, ctx.sweep.params.get(method, {}))
    return int(cfg.timesteps_medical[0])


class AblationTable(Experiment):
    """rows x the paper's columns of table `name`; subclasses say which rows."""

    notes: ClassVar[tuple[str, ...]] = ()

    def rows(self, ctx: ExperimentContext) -> list[Row]:
        raise NotImplementedError

    def columns(self, ctx: ExperimentContext) -> list[Column]:
        """The printed columns of this table, in order, for the data sets bench.toml configures."""
        printed = dict.fromkeys((c.dataset, c.fraction, c.metric) for c in ABLATIONS[self.name])
        return [Column(column_label(d, f, m), d, f, m) for d, f, m in printed if ctx.available(d)]

    def cells(self, ctx: ExperimentContext) -> dict[tuple[str, str], list[RunSpec]]:
        cols = self.columns(ctx)
        natural = natural_params(ctx)
        extra = {c.dataset: natural for c in cols if c.dataset in ("ffhq34", "celeba19")}
        return grid(ctx, [r.variant for r in self.rows(ctx)], cols, extra)

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        return ordered_runs(self.cells(ctx))

    def write(self, ctx: ExperimentContext) -> list[Path]:
        from bench.experiments.figures import bar_figure, save_figure

        rows, cols = self.rows(ctx), self.columns(ctx)
        values = collect(ctx, self.cells(ctx), {c.label: c.metric for c in cols})
        pub = {}
        for r in rows:
            for c in cols:
                cell = ablation(self.name, r.method, r.printed, c.dataset, c.fraction, c.metric)
                if cell is not None:
                    pub[(r.label, c.label)] = (cell.mean, cell.std if cell.std is not None else float("nan"))
        table = ResultTable(rows=[r.label for r in rows], columns=[c.label for c in cols], values=values,
                            published=pub, title=self.title, notes=list(self.notes),
                            references=trivial_references(ctx, cols))
        files = write_tables(table, ctx)
        if cols:
            files += save_figure(bar_figure(table, self.title), ctx, "figure")
        return files


@experiment
class Table3(AblationTable):
    name = "table3"
    title = "Table 3: pre-training at a fixed timestep vs t ~ U{0..T-1} (GlaS)"
    notes = ("fixed t: every pre-training step at the timestep the features are read at.",)

    def rows(self, ctx: ExperimentContext) -> list[Row]:
        t_ddpm, t_mdm = feature_timestep(ctx, "ddpm"), feature_timestep(ctx, "mdm")
        return [Row("MAE", "mae"),
                Row(f"DDPM fixed t={t_ddpm}", "ddpm", {"fixed_t": t_ddpm}, "fixed_t"),
                Row("DDPM", "ddpm"),
                Row(f"MDM fixed t={t_mdm}", "mdm", {"fixed_t": t_mdm}, "fixed_t"),
                Row("MDM", "mdm")]


@experiment
class Table4(AblationTable):
    name = "table4"
    title = "Table 4: loss and reconstruction target (GlaS 10% IoU, FFHQ-34 mIoU)"
    notes = (MAE_LOSS_NOTE,)

    def rows(self, ctx: ExperimentContext) -> list[Row]:
        return [Row("DDPM eps+MSE", "ddpm", {"target": "eps", "loss": "mse"}, "eps+mse"),
                Row("DDPM x0+MSE", "ddpm", {"target": "x0", "loss": "mse"}, "x0+mse"),
                Row("DDPM x0+SSIM", "ddpm", {"target": "x0", "loss": "ssim"}, "x0+ssim"),
                Row("MAE MSE", "mae", {}, "mse"),
                Row("MAE SSIM", "mae", {"loss": "ssim"}, "ssim"),
                Row("MDM MSE", "mdm", {"loss": "mse"}, "mse"),
                Row("MDM SSIM", "mdm", {"loss": "ssim"}, "ssim")]


@experiment
class Table6(AblationTable):
    name = "table6"
    title = "Table 6: the timestep features are read at (GlaS)"

    def rows(self, ctx: ExperimentContext) -> list[Row]:
        out = []
        for method in ("ddpm", "mdm"):
            for ts in FEATURE_TIMESTEPS:
                name = "t=" + "+".join(map(str, ts))
                out.append(Row(f"{method.upper()} {name}", method, {"timesteps_medical": list(ts)}, name))
        return out


@experiment
class Table7(AblationTable):
    name = "table7"
    title = "Table 7: MDM mask patch size (GlaS)"

    def rows(self, ctx: ExperimentContext) -> list[Row]:
        return [Row(f"MDM patch {p}", "mdm", {"patch": p}, f"patch={p}") for p in PATCH_SIZES]
