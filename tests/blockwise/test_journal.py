"""The job journal: records, summaries, one folder creation per stage, crash safety."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from emseg.blockwise import _journal
from emseg.blockwise._journal import Journal


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / ".emseg-journal")
    j.start({"job": "test", "block_shape": (4, 4)}, resume=False)
    return j


@pytest.fixture
def mkdirs(monkeypatch):
    """The folders created through ``Path.mkdir`` during the test, in order."""
    made: list[Path] = []
    real = Path.mkdir

    def counting(self, *args, **kwargs):
        made.append(Path(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", counting)
    return made


def test_records_and_summaries_round_trip(journal):
    assert journal.done("map") == set()
    journal.mark_done("map", 3)
    journal.mark_done("map", 0, np.int64(7))
    table = np.array([[1, 2], [3, 4]], np.uint64)
    journal.mark_done("faces", 5, table)
    assert journal.done("map") == {0, 3}
    assert journal.done("faces") == {5}
    assert journal.summary("map", 3) is None
    assert journal.summary("map", 0) == 7
    got = journal.summary("faces", 5)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, table)
    assert [b for b, _ in journal.iter_summaries("map")] == [0, 3]
    assert journal.params() == {"job": "test", "block_shape": [4, 4]}


def test_a_stage_folder_is_created_once_not_per_block(journal, mkdirs):
    for bid in range(20):
        journal.mark_done("map", bid)
    for bid in range(5):
        journal.mark_done("relabel", bid)
    assert mkdirs == [journal.path / "map", journal.path / "relabel"]
    assert journal.done("map") == set(range(20))
    assert journal.done("relabel") == set(range(5))


def test_a_copy_in_another_process_and_a_restarted_journal_still_record(journal, mkdirs):
    journal.mark_done("map", 0)
    worker = pickle.loads(pickle.dumps(journal))  # what a distributed worker holds
    worker.mark_done("map", 1)  # folder already there: no mkdir
    assert mkdirs == [journal.path / "map"]
    journal.start({"job": "test", "block_shape": (4, 4)}, resume=False)  # stages removed
    assert journal.done("map") == set()
    worker.mark_done("map", 2)
    journal.mark_done("map", 3)
    assert journal.done("map") == {2, 3}
    journal.finish()  # drops the stage folders
    assert journal.complete
    assert journal.done("map") == set()


def test_a_removed_journal_is_not_silently_recreated(journal):
    journal.remove()
    with pytest.raises(FileNotFoundError):
        journal.mark_done("map", 0)
    assert not journal.path.exists()


def test_a_record_killed_before_its_rename_leaves_no_record(journal, monkeypatch):
    """The record appears atomically: a crash before the rename leaves the block to redo."""
    journal.mark_done("map", 0)

    def killed(src, dst):
        raise KeyboardInterrupt  # stands for the process dying between write and rename

    monkeypatch.setattr(_journal.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        journal.mark_done("map", 1, np.arange(3))
    monkeypatch.undo()
    assert journal.done("map") == {0}  # the temporary file is not a record
    leftovers = [n for n in os.listdir(journal.path / "map") if n != "0"]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(".1.")  # the temporary name of block 1's record
    journal.mark_done("map", 1, np.arange(3))  # redone on resume
    assert journal.done("map") == {0, 1}
    np.testing.assert_array_equal(journal.summary("map", 1), np.arange(3))


def test_resume_keeps_records_and_refuses_other_parameters(journal):
    journal.mark_done("map", 4)
    journal.start({"job": "test", "block_shape": [4, 4]}, resume=True)
    assert journal.done("map") == {4}
    with pytest.raises(ValueError, match="block_shape"):
        journal.start({"job": "test", "block_shape": (8, 8)}, resume=True)
