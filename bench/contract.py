"""The plugin contract, checked mechanically: what every registered method must satisfy.

`check_plugin(cls)` is what tests/test_registry_contract.py runs for every plugin (timm-style:
a new plugin is tested by registering it) and what a plugin author can run on a new file:

    python -c "from bench import registry, contract; contract.check_plugin(registry.get('mynet'))"

It first asks the class what `bench.registry.register` asked when it was defined
(`Plugin.definition_problems`), then builds the model of every preset on the meta device (no
paper-size weights are allocated), runs one forward / feature extraction of the tiny model on the
CPU, and for an SSL method checks that its probe-only fields never change the artefact key and
that one step of its tiny pre-training runs exactly the stages `schedules()` names. Every problem
is reported at once (`ContractError.problems`); a check that crashes is one of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from bench.context import RunContext
from bench.errors import BenchError, one_line
from bench.plugin import Plugin
from bench.presets import PRESETS
from bench.progress import collect_histories
from bench.registry import KINDS
from bench.smoke import SmokeConfig

if TYPE_CHECKING:
    from bench.ssl import SSLMethod


class ContractError(BenchError):
    """A plugin breaks the contract; `problems` lists every broken rule, the message one per line."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.name, self.problems = name, list(problems)
        super().__init__(f"plugin {name!r} breaks the plugin contract:\n" + "\n".join(f"  - {p}" for p in problems))


def check_plugin(cls: type[Plugin]) -> None:
    """Raise ContractError naming every rule `cls` breaks; return quietly if it keeps them all."""
    problems = contract_problems(cls)
    if problems:
        raise ContractError(cls.name or cls.__qualname__, problems)


def contract_problems(cls: type[Plugin]) -> list[str]:
    """Every broken rule, as one line each (empty: the plugin keeps the contract). A check that
    crashes is a problem of its own line, never an exception out of here. The tiny models run on
    one torch thread: on a busy 2-core machine two threads of so small a model spin against each
    other (a 2 s check took 38 s), and no check depends on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _problems(cls)
    finally:
        torch.set_num_threads(threads)


def _problems(cls: type[Plugin]) -> list[str]:
    problems = _declaration_problems(cls)
    if not _instantiable(cls):  # the rest needs an instance: the methods written, Config and presets
        return problems
    for preset in PRESETS:
        try:
            build_without_weights(cls, preset)
        except Exception as exc:  # any failure is the plugin's; report it, do not crash the check
            problems.append(f"presets[{preset!r}]: build_model() on the meta device failed: {one_line(exc)}")
    if cls.kind == "ssl":
        problems += _ssl_problems(cls)
    elif not problems:
        problems += _supervised_problems(cls)
    return problems


def build_without_weights(cls: type[Plugin], preset: str) -> nn.Module:
    """The preset's model with every parameter on the meta device (no weight memory).

    Under `torch.device("meta")`; a constructor that reads tensor values (MONAI's Swin UNETR
    calls `.item()` on its drop-path rates) is built instead with only the parameters and
    buffers moved to the meta device as they are registered (as accelerate's init_empty_weights).
    """
    try:
        with torch.device("meta"):
            return cls(cls.presets[preset]).build_model()
    except RuntimeError as exc:
        if "meta" not in str(exc):
            raise
    with _meta_parameters():
        return cls(cls.presets[preset]).build_model()


@contextlib.contextmanager
def _meta_parameters() -> Iterator[None]:
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer  # type: ignore[method-assign]


def _declaration_problems(cls: type[Plugin]) -> list[str]:
    out = []
    if not cls.name:
        out.append("no name: register it with @register(NAME, KIND)")
    if cls.kind not in KINDS:
        out.append(f"kind {cls.kind!r} is not one of {KINDS}: subclass SSLMethod or SupervisedMethod")
    return out + cls.definition_problems()


def _instantiable(cls: type[Plugin]) -> bool:
    """Whether every preset makes an instance: no abstract method left, each preset a Config."""
    config, presets = getattr(cls, "Config", None), getattr(cls, "presets", None)
    return (not getattr(cls, "__abstractmethods__", ()) and isinstance(config, type)
            and dataclasses.is_dataclass(config) and isinstance(presets, dict)
            and all(isinstance(presets.get(p), config) for p in PRESETS))


def _guarded(what: str, check: Callable[[], list[str]]) -> list[str]:
    """`check()`'s problems, or the one line saying how it crashed."""
    try:
        return check()
    except Exception as exc:
        return [f"{what} failed: {one_line(exc)}"]


def _supervised_problems(cls: type[Plugin]) -> list[str]:
    return _guarded("the tiny model's forward", lambda: _forward_problems(cls))


def _forward_problems(cls: type[Plugin]) -> list[str]:
    """The tiny network maps a 1 x 3 x S x S batch to 1 x out_channels x S x S logits."""
    plugin = cls(cls.presets["tiny"])
    side = plugin.cfg.input_size or plugin.cfg.crop
    model = plugin.build_model(2).eval()
    with torch.no_grad():
        try:
            out = model(torch.rand(1, 3, side, side))
        except Exception as exc:
            return [f"tiny model: forward of a 1 x 3 x {side} x {side} batch failed: {one_line(exc)}"]
    want = (1, plugin.out_channels(2), side, side)  # type: ignore[attr-defined]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [f"tiny model: forward gave {got}, expected logits of shape {want}"]
    return []


def _ssl_problems(cls: type[Plugin]) -> list[str]:
    from bench.ssl import SSLMethod

    if not issubclass(cls, SSLMethod):
        return ["kind 'ssl' but not an SSLMethod subclass"]
    return (_guarded("the artefact key checks", lambda: _identity_problems(cls))
            + _guarded("the tiny backbone's extract", lambda: _extract_problems(cls))
            + _guarded("the tiny pre-training", lambda: _schedule_problems(cls)))


def _identity_problems(cls: type[SSLMethod]) -> list[str]:
    """Probe-only fields keep the artefact key; `pretrain_seed` changes it."""
    out = []
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    tiny = cls.presets["tiny"]
    key = cls(tiny).pretrain_identity()
    for name in sorted(cls.probe_only() & fields):
        changed = _perturbed(tiny, name)
        if changed is not None and cls(changed).pretrain_identity() != key:
            out.append(f"probe-only field {name!r} changes the artefact key (pretrain_identity keeps it)")
    if "pretrain_seed" in fields and cls(_perturbed(tiny, "pretrain_seed")).pretrain_identity() == key:
        out.append("pretrain_seed does not change the artefact key")
    return out


def _schedule_problems(cls: type[SSLMethod]) -> list[str]:
    """The tiny pre-training, one step a stage on a few random images: the stages it runs (the
    `desc` of each `bench.pretrain.pretrain` loop) are exactly the keys of `schedules()`, which
    `bench run --smoke` scales its measured steps by and the data-parallel checks read batches from."""
    from bench.runner import RunSpec
    from bench.smoke.run import smoke_overrides

    tiny = cls.presets["tiny"]
    capped = dataclasses.replace(tiny, **smoke_overrides(tiny, "medical", SmokeConfig(steps=1, batch=2)))
    plugin = cls(capped)
    side = 2 * capped.window
    images = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(4)]
    declared = list(plugin.schedules())
    with tempfile.TemporaryDirectory() as out, collect_histories() as ran:
        spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method=cls.name, seed=0,
                       preset="tiny", output=out)
        plugin.pretrain(images, RunContext(spec=spec, device=torch.device("cpu")))
    problems = []
    unnamed = [s for s in ran if s not in declared]
    if unnamed:
        problems.append(f"pre-training ran stage(s) {', '.join(map(repr, unnamed))} that schedules() does not name "
                        f"(it names {', '.join(map(repr, declared)) or 'none'}): a stage's schedules() key must be "
                        "the desc its bench.pretrain.pretrain loop gets, or `bench run --smoke` cannot estimate it")
    idle = [s for s in declared if s not in ran]
    if idle:
        problems.append(f"schedules() names stage(s) {', '.join(map(repr, idle))} that the tiny pre-training did not run")
    return problems


def _extract_problems(cls: type[SSLMethod]) -> list[str]:
    """The tiny backbone's `extract` gives a non-empty list of B x C x h x w maps for a B = 2 batch."""
    plugin: Any = cls(cls.presets["tiny"])
    w = plugin.cfg.window
    backbone = plugin.build_model().eval()
    out = []
    for domain in ("medical", "natural"):
        try:
            with torch.no_grad():
                maps = plugin.extract(backbone, torch.rand(2, 3, w, w), domain)
        except Exception as exc:
            out.append(f"extract({domain!r}) on a 2 x 3 x {w} x {w} batch failed: {one_line(exc)}")
            continue
        if not isinstance(maps, (list, tuple)) or not maps:
            out.append(f"extract({domain!r}) gave {type(maps).__name__}, expected a non-empty list of maps")
            continue
        bad = [tuple(m.shape) for m in maps if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[0] != 2]
        if bad:
            out.append(f"extract({domain!r}) maps must be 2 x C x h x w for a batch of 2, got {bad}")
    return out


def _perturbed(cfg: Any, name: str) -> Any:
    """A copy of `cfg` with field `name` changed, or None where the Config refuses the change (a
    value no run can have has no artefact key to keep)."""
    value = getattr(cfg, name)
    if isinstance(value, bool):
        new: Any = not value
    elif isinstance(value, float) and 0 < value < 1:
        new = value / 2  # a fraction (an overlap) stays one
    elif isinstance(value, (int, float)):
        new = value + 1
    elif isinstance(value, tuple):
        new = value + value[-1:] if value else (1,)
    elif value is None or isinstance(value, str):
        new = "changed" if value != "changed" else "other"
    else:
        return None
    try:
        return dataclasses.replace(cfg, **{name: new})
    except (BenchError, ValueError):  # the Config's own checks (FieldError is both)
        return None
