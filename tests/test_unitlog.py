"""The unit log: one append-only JSON-lines file per process, torn lines ignored, compaction."""

from __future__ import annotations

import multiprocessing as mp

from scaleseg.unitlog import UnitLog


def _append_many(folder: str, worker: int, n: int) -> None:
    log = UnitLog(folder)
    for i in range(n):
        log.append({"image": f"img{worker}", "block": [i, 0], "value": i * worker})


def test_processes_append_to_their_own_files_and_every_record_is_read(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 300)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = UnitLog(tmp_path)
    assert len(log.files()) == 2  # one per process, not one per unit
    records = log.read()
    assert len(records) == 600
    assert records[("img2", (299, 0))]["value"] == 598


def test_a_line_cut_by_a_kill_counts_as_not_finished_and_compaction(tmp_path):
    log = UnitLog(tmp_path)
    for i in range(5):
        log.append({"image": "a", "block": [0, i]})
    (path,) = log.files()
    text = path.read_text()
    path.write_text(text[: len(text) - 7])  # the last record is torn
    assert sorted(k[1] for k in log.read()) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    log.append({"image": "a", "block": [0, 4], "again": True})  # the unit runs again
    records = log.read()
    assert records[("a", (0, 4))]["again"] is True and len(records) == 5
    whole = log.compact()
    assert log.files() == [whole] and whole.name == "units.jsonl"
    assert log.read() == records
    log.append({"image": "b", "created": True})  # a resumed run appends beside it
    assert ("b", ()) in log.read() and len(log.files()) == 2
