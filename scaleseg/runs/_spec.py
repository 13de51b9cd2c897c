"""The run spec: everything a stage run was asked to compute, stored in its output folder.

A spec holds the stage's validated config (without execution options such as batch size,
retries or the cluster), the inputs and the selection of images, the label source, the model
spec and the scaleseg version. A re-run with the same spec resumes; post-steps (``export``,
``instances``) may be added to a finished run; any other difference is refused with each
differing key, its stored and its requested value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SPEC_FILE", "RunSpec", "build_spec", "image_selection", "read_spec", "spec_differences"]

SPEC_FILE = "run_spec.json"
#: Selections up to this many images list their names (others: count and checksum only).
NAMES_LISTED = 200


class RunSpec(BaseModel):
    """What a stage run computes (see the module notes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    scaleseg: str = Field(description="scaleseg version")
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    post_steps: tuple[str, ...] = ()

    def with_post_steps(self, steps: Iterable[str]) -> RunSpec:
        """A copy whose post-steps are the union of its own and ``steps`` (sorted)."""
        return self.model_copy(
            update={"post_steps": tuple(sorted(set(self.post_steps) | set(steps)))}
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def build_spec(
    stage: str,
    *,
    config: Any = None,
    inputs: Mapping[str, Any] | None = None,
    labels: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    post_steps: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> RunSpec:
    """A :class:`RunSpec` from a config model (its ``exclude`` fields left out) and plain data."""
    from .. import __version__

    if config is None:
        cfg: dict[str, Any] = {}
    elif hasattr(config, "model_dump"):
        cfg = config.model_dump(mode="json", exclude=set(exclude))
    else:
        cfg = {k: v for k, v in dict(config).items() if k not in set(exclude)}
    return RunSpec(
        stage=stage,
        scaleseg=__version__,
        config=_json(cfg),
        inputs=_json(dict(inputs or {})),
        labels=None if labels is None else _json(dict(labels)),
        model=None if model is None else _json(dict(model)),
        post_steps=tuple(sorted(set(post_steps))),
    )


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def image_selection(names: Iterable[str]) -> dict[str, Any]:
    """How a spec records a selection of images: count, checksum and (when short) the names."""
    names = sorted(str(n) for n in names)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    out: dict[str, Any] = {"n": len(names), "sha256": digest}
    if len(names) <= NAMES_LISTED:
        out["names"] = names
    return out


def read_spec(folder: str | Path) -> RunSpec | None:
    """The spec stored in ``folder`` (``None`` when there is none)."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    return RunSpec.model_validate_json(path.read_text())


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _describe(key: str, old: Any, new: Any) -> str:
    if key.endswith(".names") and isinstance(old, list) and isinstance(new, list):
        gone = sorted(set(old) - set(new))
        added = sorted(set(new) - set(old))
        parts = []
        if gone:
            parts.append(
                f"{len(gone)} removed ({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''})"
            )
        if added:
            parts.append(
                f"{len(added)} added ({', '.join(added[:5])}{', ...' if len(added) > 5 else ''})"
            )
        return f"{key}: " + ("; ".join(parts) or "order changed")
    return f"{key}: {old!r} -> {new!r}"


#: Keys added to run specs after runs were stored with specs that lack them. A stored spec
#: without one is compared without it: what that run used is not recorded, and the scaleseg
#: that wrote it resumed it on the rest (``model.features``: the feature statistics' checksums,
#: added with U_novel).
LATER_KEYS = frozenset({"model.features"})


def spec_differences(stored: RunSpec, requested: RunSpec) -> list[str]:
    """One line per key whose value differs (post-steps are not compared: they may be added;
    nor are :data:`LATER_KEYS` that the stored spec predates)."""
    a = _flatten(stored.model_dump(mode="json", exclude={"post_steps"}))
    b = _flatten(requested.model_dump(mode="json", exclude={"post_steps"}))
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key, missing), b.get(key, missing)
        if old is missing and any(key == k or key.startswith(k + ".") for k in LATER_KEYS):
            continue
        if old != new:
            lines.append(
                _describe(key, None if old is missing else old, None if new is missing else new)
            )
    return lines
