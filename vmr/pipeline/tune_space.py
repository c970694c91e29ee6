"""Search spaces of hyperparameter sweeps as data (``configs/tune.yaml``; the format is described in
:mod:`vmr.pipeline.tune`): checking a distribution, one value it can produce, its Ray Tune domain, and sampled values
as ``key=value`` overrides of the training config."""
from __future__ import annotations

from typing import Any

import ray.tune
import yaml

from vmr.errors import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid")


def _numbers(key: str, name: str, args, n: tuple[int, ...]) -> list[float]:
    if not isinstance(args, (list, tuple)) or len(args) not in n:
        raise ConfigError(f"search_space.{key}: {name} takes a list of {' or '.join(map(str, n))} numbers, "
                          f"got {args!r}")
    try:
        return [float(a) for a in args]
    except (TypeError, ValueError):
        raise ConfigError(f"search_space.{key}: {name} takes numbers, got {args!r}") from None


def check_distribution(key: str, spec: Any) -> None:
    """Raise :class:`ConfigError` unless ``spec`` is a valid distribution (module docstring) for ``key``."""
    if not isinstance(spec, dict):
        return  # a fixed value
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"search_space.{key}: expected one of {list(DISTRIBUTIONS)} (e.g. {{uniform: [0.1, 1.0]}}) "
                          f"or a plain value, got {spec!r}")
    name, args = next(iter(spec.items()))
    if name in ("choice", "grid"):
        if not isinstance(args, (list, tuple)) or not args:
            raise ConfigError(f"search_space.{key}: {name} takes a non-empty list, got {args!r}")
        return
    nums = _numbers(key, name, args, (3,) if name == "quniform" else (2,))
    lo, hi = nums[0], nums[1]
    if not lo < hi:
        raise ConfigError(f"search_space.{key}: {name} needs low < high, got {args!r}")
    if name == "loguniform" and lo <= 0:
        raise ConfigError(f"search_space.{key}: loguniform needs a positive low bound, got {lo}")
    if name == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ConfigError(f"search_space.{key}: randint takes integers [low, high), got {args!r}")


def representative(spec: Any) -> Any:
    """One value the distribution can produce (for checking the key against the training config)."""
    if not isinstance(spec, dict):
        return spec
    name, args = next(iter(spec.items()))
    if name in ("choice", "grid"):
        return args[0]
    if name == "randint":
        return int(args[0])
    return float(args[0])


def to_tune(space: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: spec}`` -> Ray Tune's param space (same keys, ``ray.tune`` domains as values)."""
    out = {}
    for key, spec in space.items():
        check_distribution(key, spec)
        if not isinstance(spec, dict):
            out[key] = spec
            continue
        name, args = next(iter(spec.items()))
        if name == "uniform":
            out[key] = ray.tune.uniform(float(args[0]), float(args[1]))
        elif name == "loguniform":
            out[key] = ray.tune.loguniform(float(args[0]), float(args[1]))
        elif name == "quniform":
            out[key] = ray.tune.quniform(float(args[0]), float(args[1]), float(args[2]))
        elif name == "randint":
            out[key] = ray.tune.randint(int(args[0]), int(args[1]))
        elif name == "choice":
            out[key] = ray.tune.choice(list(args))
        else:
            out[key] = ray.tune.grid_search(list(args))
    return out


def overrides_of(params: dict[str, Any]) -> list[str]:
    """A trial's sampled ``{dotted key: value}`` as ``key=value`` overrides for :func:`vmr.config.resolve`."""
    out = []
    for k, v in sorted(params.items()):
        if hasattr(v, "item"):
            v = v.item()  # numpy scalars from the samplers
        out.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out
