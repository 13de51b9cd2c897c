"""One run of one stage on its output folder: checks, lock, spec, run record.

Three kinds of output folder:

``"owner"``
    The run writes in place and resumes (train, predict, evaluate, qa, select): the folder is
    created at the start, its spec stored at once; ``overwrite`` empties a scaleseg folder
    first.
``"atomic"``
    The run builds its result in a hidden sibling and publishes it whole at the end with
    :meth:`StageRun.publish` (convert, demo-data, gt): an existing result stays untouched until
    the new one is complete; a failed run leaves nothing it created.
``"addon"``
    The run adds its own files to another stage's output (instances and ROI sets into a
    prediction): it never replaces that folder; its spec and record have their own names.

Every kind refuses an output that is, contains or lies inside one of the run's inputs, a
non-empty folder scaleseg did not write (even with ``overwrite``), a different spec without
``overwrite`` (listing each differing key), and a second concurrent run (the lock).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from ..files import atomic_write_text, remove_location
from ..runrecord import RunRecord
from ._guard import (
    RECORD_FILE,
    OutputError,
    check_paths,
    folder_entries,
    foreign_folder_error,
    scaleseg_record,
)
from ._lock import LOCK_FILE, RunLock
from ._spec import SPEC_FILE, RunSpec, spec_differences

__all__ = ["StageRun"]

Status = Literal["new", "resume", "replace"]


class StageRun:
    """Context manager around one stage run (see the module notes).

    Parameters
    ----------
    stage : str
        Stage name as on the command line (``"predict"``).
    output : path
        The output folder.
    spec : RunSpec
        What this run computes.
    inputs : mapping
        Role -> path of every input of the run (``None`` values are skipped); the output may not
        be, contain or lie inside any of them.
    overwrite : bool
        Replace a scaleseg folder holding another spec.
    kind : {"owner", "atomic", "addon"}
    host_stage : str, optional
        For ``"addon"``: the stage whose output the folder must be (``"predict"``).
    record_name, spec_name : str
        File names of the run record and the spec (addons use their own).
    owns : iterable of str
        For ``"addon"``: the files this stage writes into the host folder (an existing one
        without a stored spec needs ``overwrite``).
    keep_failed : bool
        For ``"owner"``: keep a folder this run created when it fails (its finished units are
        resumed by the next run); ``False`` removes it (stages with nothing to resume).
    argv : list of str, optional
        The command line, recorded.
    config : optional
        The full configuration, recorded in ``run.json``.
    """

    def __init__(
        self,
        stage: str,
        output: str | os.PathLike,
        spec: RunSpec,
        *,
        inputs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        kind: Literal["owner", "atomic", "addon"] = "owner",
        host_stage: str | None = None,
        record_name: str = RECORD_FILE,
        spec_name: str = SPEC_FILE,
        argv: Iterable[str] | None = None,
        config: Any = None,
        heartbeat: float = 10.0,
        owns: Iterable[str] = (),
        keep_failed: bool = True,
    ):
        self.stage = stage
        self.output = Path(str(output).removeprefix("file://"))
        self.spec = spec
        self.inputs = dict(inputs or {})
        self.overwrite = bool(overwrite)
        self.kind = kind
        self.host_stage = host_stage
        self.record_name = record_name
        self.spec_name = spec_name
        self.argv = None if argv is None else list(argv)
        self.config = config
        self.owns = tuple(owns)
        self.keep_failed = keep_failed
        self.status: Status = "new"
        self.stored: RunSpec | None = None
        self.new_post_steps: tuple[str, ...] = ()
        self.record: RunRecord | None = None
        self._lock = RunLock(self.output, heartbeat=heartbeat, what=f"scaleseg {stage}")
        self._created = False
        self._published = False
        self._builds: list[Path] = []

    # -- decisions ------------------------------------------------------------------------------
    def check(self, *, host_known: bool = False) -> Status:
        """What entering would decide (``"new"``, ``"resume"`` or ``"replace"``), without the
        lock; raises as entering would, before anything is written.

        ``host_known``: an addon prepared by its host's own run, which holds the folder's lock
        and has not written its record yet (predict preparing its instances).
        """
        self._inspect(host_known=host_known)
        return self.status

    def _inspect(self, *, host_known: bool = False) -> None:
        check_paths(self.output, self.inputs)
        out = self.output
        if out.exists() and not out.is_dir():
            raise OutputError(f"{out} exists and is a file, not a folder")
        entries = folder_entries(out)
        if self.kind == "addon" and not host_known:
            record = scaleseg_record(out)
            if record is None or (self.host_stage and record.get("command") != self.host_stage):
                raise OutputError(
                    f"{out} is not the output of `scaleseg {self.host_stage}` (no run record of "
                    "it there)"
                )
        elif entries and scaleseg_record(out, self.record_name) is None:
            raise foreign_folder_error(out, entries, self.stage)
        stored_path = out / self.spec_name
        if self.kind != "addon" and not entries:
            self.status = "new"
            return
        if not stored_path.is_file():
            if self.kind == "addon":
                found = [n for n in self.owns if (out / n).exists()]
                if found and not self.overwrite:
                    raise OutputError(
                        f"{out} already holds {', '.join(found)} of an earlier `scaleseg "
                        f"{self.stage}` run that recorded no request; use --overwrite to replace "
                        "them"
                    )
                self.status = "replace" if found else "new"
                return
            if self.overwrite:
                self.status = "replace"
                return
            raise OutputError(
                f"{out} holds an output of an earlier scaleseg version (no {self.spec_name}); "
                "use --overwrite to replace it or choose a new folder"
            )
        self.stored = RunSpec.model_validate_json(stored_path.read_text())
        diffs = spec_differences(self.stored, self.spec)
        if not diffs:
            self.status = "resume"
            self.new_post_steps = tuple(
                s for s in self.spec.post_steps if s not in self.stored.post_steps
            )
            return
        if self.overwrite:
            self.status = "replace"
            return
        what = f"scaleseg {self.stored.stage}" if self.stored.stage != self.stage else "a run"
        raise OutputError(
            f"{out} holds {what} with a different request; differences (stored -> requested):\n  "
            + "\n  ".join(diffs)
            + "\nRe-run with the stored values to resume, --overwrite to replace that output, or "
            "choose a new output folder"
        )

    # -- context --------------------------------------------------------------------------------
    def __enter__(self) -> StageRun:
        self._inspect()
        self._created = not self.output.exists()
        self._lock.acquire()
        try:
            self._inspect()  # again under the lock: another run may have finished meanwhile
            if self.status == "replace" and self.kind == "owner":
                for name in folder_entries(self.output):
                    remove_location(self.output / name)
            if self.kind in ("owner", "addon"):
                self.write_spec()
            self.record = RunRecord(
                self.stage,
                self.output,
                config=self.config if self.config is not None else self.spec.config,
                argv=self.argv,
                filename=self.record_name,
                keep_previous=self.status == "resume",
            )
            self.record.data["spec"] = self.spec.model_dump(mode="json")
            for role, path in self.inputs.items():
                if path is not None:
                    self.record.add_input(path, name=role)
            self.record.data["resumed"] = self.status == "resume"
        except BaseException:
            self._lock.release()
            raise
        return self

    def write_spec(self) -> None:
        """Store the spec (with the post-steps done before and asked now)."""
        spec = self.spec
        if self.stored is not None and self.status == "resume":
            spec = spec.with_post_steps(self.stored.post_steps)
        atomic_write_text(self.output / self.spec_name, spec.to_json())

    def fresh_path(self) -> Path:
        """A new, not yet existing hidden sibling of the output to build an ``"atomic"`` result
        in (then :meth:`publish` it)."""
        path = self.output.with_name(f".{self.output.name}.build-{uuid.uuid4().hex[:8]}")
        self._builds.append(path)
        return path

    def publish(self, built: Path) -> None:
        """Replace the output folder by ``built`` (``"atomic"`` runs), keeping the lock held."""
        out = self.output
        old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        os.replace(built, out)
        os.replace(old / LOCK_FILE, out / LOCK_FILE)
        remove_location(old)
        self._published = True
        self.write_spec()

    def __exit__(self, exc_type, exc, tb) -> None:
        for build in self._builds:  # this run's unfinished builds (after an error)
            if build.exists():
                remove_location(build)
        try:
            if exc is None:
                self.record.finish("ok")
            elif self.kind == "atomic" and self._created and not self._published:
                pass  # nothing was produced: the folder goes (below), no record of a non-result
            elif self.record is not None and self.output.is_dir():
                self.record.finish(
                    "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc
                )
        finally:
            self._lock.release()
            if exc is not None and self._created and not self._published:
                if self.kind == "atomic" and not folder_entries(self.output):
                    remove_location(self.output)
                elif self.kind == "owner" and not self.keep_failed:
                    remove_location(self.output)  # nothing resumable: leave no half result
