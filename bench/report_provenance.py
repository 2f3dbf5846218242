"""The provenance part of `bench report`: where the numbers behind a table came from.

Per group of records: a compact summary (how many, which commits and whether the tree was dirty,
devices, hosts, package versions, total wall time) and the full per-record list, folded in a
<details>, so a reader can trace any cell back to the code and machine that produced it.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class ProvenanceConfig:
    hash_chars: int = 10  # config hash / commit prefix shown per record
    wall_digits: int = 1  # decimals of the per-record wall time in seconds


CFG = ProvenanceConfig()


def provenance_html(records: list[dict[str, Any]]) -> str:
    """A compact summary table and the full per-record list in a collapsible <details>."""
    prov = [r.get("provenance") or {} for r in records]
    commits = _counts(_commit(p) for p in prov)
    devices = _counts(_device(p) for p in prov)
    hosts = _counts(str(p.get("host", "?")) for p in prov)
    names = sorted({pkg for p in prov for pkg in (p.get("packages") or {})})
    versions = {pkg: _counts((str((p.get("packages") or {}).get(pkg, "?")) for p in prov), ", ") for pkg in names}
    wall = sum(_wall(r) or 0.0 for r in records)
    summary = [("records", str(len(records))), ("commits", commits), ("devices", devices), ("hosts", hosts),
               ("package versions", "; ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
               ("total wall time", _duration(wall))]
    table = "<table class=provenance>\n" + "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary) + "\n</table>"
    cols = ["run id", "dataset", "fraction", "method", "seed", "preset", "config hash", "commit", "device",
            "host", "wall s", "finished"]
    rows = [[str(r.get("run_id", "?")), str(r.get("dataset", "?")), f"{r.get('fraction', '?')}",
             str(r.get("method", "?")), str(r.get("seed", "?")), str(r.get("preset", "?")),
             str(p.get("config_hash", "?"))[: CFG.hash_chars], _commit(p), _device(p), str(p.get("host", "?")),
             "?" if _wall(r) is None else f"{_wall(r):.{CFG.wall_digits}f}", str(r.get("finished_at", "?"))]
            for r, p in zip(records, prov)]
    full = "\n".join(["<table class=records>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>",
                      *("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows),
                      "</table>"])
    return f"{table}\n<details><summary>all {len(records)} records</summary>\n{full}\n</details>"


def _commit(p: dict[str, Any]) -> str:
    git = p.get("git") or {}
    commit = str(git.get("commit", "unknown"))[: CFG.hash_chars]
    return commit + (" (dirty)" if git.get("dirty") else "")


def _device(p: dict[str, Any]) -> str:
    extra = p.get("gpu") or p.get("cpu")
    return f"{p.get('device', '?')} ({extra})" if extra else str(p.get("device", "?"))


def _wall(record: dict[str, Any]) -> float | None:
    value = (record.get("timings") or {}).get("total_s")
    return float(value) if isinstance(value, (int, float)) else None


def _counts(values: Iterable[str], sep: str = "; ") -> str:
    """'a ×3; b ×1': every distinct value and how often, so a mixed origin stands out."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sep.join(f"{k} ×{n}" for k, n in sorted(counts.items()))


def _duration(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d} ({seconds:.1f} s)"
