"""Unsafe archives are refused whole before anything is unpacked."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from engine.errors import InvalidInput
from engine.io import archives


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for info in members:
            payload = data.get(info.name)
            archive.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def regular(name: str, data: bytes = b"hello") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "ok/../../x"])
def test_tar_with_escaping_names_is_refused(name: str, tmp_path: Path) -> None:
    good, good_data = regular("fine.txt")
    bad, bad_data = regular(name)
    path = make_tar(tmp_path / "a.tar", [good, bad], {good.name: good_data, bad.name: bad_data})
    with pytest.raises(InvalidInput) as refused:
        archives.extract(path, tmp_path / "out")
    assert refused.value.detail["member"] == name
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_with_links_is_refused(kind: bytes, tmp_path: Path) -> None:
    good, good_data = regular("fine.txt")
    link = tarfile.TarInfo("link")
    link.type = kind
    link.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "fine.txt"
    path = make_tar(tmp_path / "a.tar", [good, link], {good.name: good_data})
    with pytest.raises(InvalidInput, match="link"):
        archives.extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_tar_is_refused(tmp_path: Path) -> None:
    info, data = regular("big.bin", b"x" * 20000)
    path = make_tar(tmp_path / "a.tar", [info], {info.name: data})
    raw = path.read_bytes()
    path.write_bytes(raw[:8000])
    with pytest.raises(InvalidInput):
        archives.extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_with_a_lying_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", b"12345")
    raw = bytearray(path.read_bytes())
    # The central directory's uncompressed size (offset 24 in its entry): claim 6 bytes.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (6).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidInput):
        archives.extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_with_escaping_name_and_symlink_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        archive.writestr("../x.txt", b"evil")
    with pytest.raises(InvalidInput, match=r"\.\."):
        archives.check(path)
    link = zipfile.ZipInfo("link")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidInput, match="link"):
        archives.check(tmp_path / "b.zip")


def test_good_archives_unpack(tmp_path: Path) -> None:
    info, data = regular("dir/a.txt")
    path = make_tar(tmp_path / "a.tar", [info], {info.name: data})
    assert [p.name for p in archives.extract(path, tmp_path / "out")] == ["a.txt"]
    assert (tmp_path / "out" / "dir" / "a.txt").read_bytes() == b"hello"
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("b.txt", b"zip")
    archives.extract(tmp_path / "a.zip", tmp_path / "zout")
    assert (tmp_path / "zout" / "b.txt").read_bytes() == b"zip"


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(b"nothing here")
    with pytest.raises(InvalidInput, match="not a .tar or .zip"):
        archives.check(tmp_path / "a.tar")
