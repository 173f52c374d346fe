"""Layers are deterministic: their bytes depend on the entries only, not on host times, owners or order."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import pytest

from chalicelib.core.errors import ArtifactError
from chalicelib.oci.layers import Entry, tree_entries, write_layer
from chalicelib.oci.registry import parse_reference


def _tree(root: Path, mtime: int) -> Path:
    (root / "b").mkdir(parents=True)
    (root / "b" / "z.txt").write_text("z")
    (root / "a.bin").write_bytes(b"\x00\x01")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime))
    return root


def test_the_same_tree_gives_the_same_digest_whatever_the_times(tmp_path: Path) -> None:
    one = write_layer(tree_entries(_tree(tmp_path / "one", 1_000_000), "x"), tmp_path / "1.tar.gz")
    two = write_layer(tree_entries(_tree(tmp_path / "two", 2_000_000), "x"), tmp_path / "2.tar.gz")
    assert one.digest == two.digest and one.diff_id == two.diff_id
    assert one.path.read_bytes() == two.path.read_bytes()
    changed = _tree(tmp_path / "three", 1_000_000)
    (changed / "b" / "z.txt").write_text("y")
    assert write_layer(tree_entries(changed, "x"), tmp_path / "3.tar.gz").digest != one.digest


def test_entries_are_sorted_owned_by_root_with_fixed_modes(tmp_path: Path) -> None:
    entries = [Entry("opt/z", source=b"z"), Entry("opt/a/run", source=b"#!", executable=True)]
    layer = write_layer(entries, tmp_path / "l.tar.gz")
    with gzip.open(layer.path) as gz, tarfile.open(fileobj=gz) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["opt", "opt/a", "opt/a/run", "opt/z"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert [oct(m.mode) for m in members] == ["0o755", "0o755", "0o755", "0o644"]


@pytest.mark.parametrize("path", ["/etc/passwd", "../up", "a/../../b", ""])
def test_a_path_outside_the_image_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ArtifactError):
        write_layer([Entry(path, source=b"x")], tmp_path / "l.tar.gz")


def test_references_name_their_registry() -> None:
    ref = parse_reference("127.0.0.1:5000/modelport/base:py3.11@sha256:" + "a" * 64)
    assert (ref.host, ref.repository, ref.tag) == ("127.0.0.1:5000", "modelport/base", "py3.11")
    assert ref.reference == "sha256:" + "a" * 64
    assert parse_reference("public.ecr.aws/lambda/python:3.11").repository == "lambda/python"
