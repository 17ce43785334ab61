"""facellm.atomic: a file or folder appears whole under its name, or the old one stays."""

import os
import threading

import pytest

from facellm.atomic import atomic_dir, atomic_open, atomic_path, write_bytes_atomic, write_text_atomic


class Boom(Exception):
    pass


def visible(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_writes_the_final_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with atomic_path(tmp_path / "c.txt", fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and not tmp.exists()
        tmp.write_text("by any writer")
        assert not (tmp_path / "c.txt").exists()  # nothing under the final name until the end
    assert (tmp_path / "c.txt").read_text() == "by any writer"
    assert visible(tmp_path) == ["b.bin", "c.txt", "out.json"]


@pytest.mark.parametrize("unique", [False, True])
def test_failure_removes_the_temp_and_keeps_the_old_file(tmp_path, unique):
    target = tmp_path / "data.jsonl"
    target.write_text("finished\n")
    with pytest.raises(Boom), atomic_open(target, unique=unique) as f:
        f.write("half of the new")
        raise Boom
    assert target.read_text() == "finished\n"
    assert visible(tmp_path) == ["data.jsonl"]
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.png") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert visible(tmp_path) == ["data.jsonl"]


def test_a_stale_temp_from_a_killed_run_is_overwritten(tmp_path):
    (tmp_path / ".out.txt.tmp").write_text("left by a killed run, longer than the new content")
    write_text_atomic(tmp_path / "out.txt", "whole")
    assert (tmp_path / "out.txt").read_text() == "whole"
    assert visible(tmp_path) == ["out.txt"]


def test_unique_temps_let_concurrent_writers_of_one_path_all_finish(tmp_path):
    target, errors = tmp_path / "cache.json", []

    def write(n):
        try:
            for _ in range(50):
                write_text_atomic(target, str(n) * 1000, unique=True)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_text() in {str(n) * 1000 for n in range(4)}  # one writer's whole content
    assert visible(tmp_path) == ["cache.json"]


def test_atomic_open_rejects_reading_and_appending_modes(tmp_path):
    for mode in ("r", "a", "w+"):
        with pytest.raises(ValueError), atomic_open(tmp_path / "x", mode):
            pass
    assert visible(tmp_path) == []


def test_directory_swap_replaces_the_old_folder_only_when_the_new_one_is_whole(tmp_path):
    target = tmp_path / "dataset"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and not os.listdir(tmp) and tmp.name.startswith(".")
        (tmp / "a").write_text("first")
    assert visible(target) == ["a"]

    with pytest.raises(Boom), atomic_dir(target) as tmp:
        (tmp / "b").write_text("half")
        raise Boom
    assert visible(target) == ["a"] and (target / "a").read_text() == "first"
    assert visible(tmp_path) == ["dataset"]

    (tmp_path / ".dataset.tmp").mkdir()  # left by a killed run
    (tmp_path / ".dataset.tmp" / "stale").write_text("x")
    with atomic_dir(target) as tmp:
        assert not os.listdir(tmp)
        (tmp / "b").write_text("second")
    assert visible(target) == ["b"]
    assert visible(tmp_path) == ["dataset"]
