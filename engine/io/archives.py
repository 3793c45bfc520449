"""Safe reading of uploaded .tar / .zip archives.

Every member is checked before a single byte is written: a name with ``..`` or an absolute
path, a link (symbolic or hard), a device or fifo, a member whose stored size does not match
its data, or an archive larger than ``MASKLOOP_MAX_IMPORT_BYTES`` unpacked rejects the whole
archive with an ``InvalidInput`` naming the member. Only then is it unpacked, into a folder
the caller owns (a temporary folder, never the media storage).
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from engine.errors import InvalidInput


@dataclass(frozen=True)
class Member:
    name: str
    size: int


def kind_of(path: Path) -> str:
    """'tar', 'zip' or '' (not an archive), from the bytes, not the name."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    return ""


def _check_name(name: str) -> str:
    if not name or "\x00" in name:
        raise InvalidInput("archive member with an empty or invalid name", member=name)
    normalized = name.replace("\\", "/")
    if (
        normalized.startswith("/")
        or PurePosixPath(normalized).is_absolute()
        or (len(normalized) > 1 and normalized[1] == ":")
    ):
        raise InvalidInput(f"archive member {name!r} has an absolute path", member=name)
    if ".." in PurePosixPath(normalized).parts:
        raise InvalidInput(f"archive member {name!r} leaves the archive (..)", member=name)
    return normalized


def check(path: Path) -> list[Member]:
    """The archive's regular files, if every member is safe; InvalidInput otherwise."""
    kind = kind_of(path)
    if kind == "zip":
        members = _check_zip(path)
    elif kind == "tar":
        members = _check_tar(path)
    else:
        raise InvalidInput(f"{path.name} is not a .tar or .zip archive")
    total = sum(m.size for m in members)
    limit = settings.MASKLOOP_MAX_IMPORT_BYTES
    if total > limit:
        raise InvalidInput(
            f"the archive unpacks to {total} bytes, over the limit of {limit} "
            "(MASKLOOP_MAX_IMPORT_BYTES)"
        )
    return members


def _check_tar(path: Path) -> list[Member]:
    members: list[Member] = []
    length = path.stat().st_size
    try:
        with tarfile.open(path, "r:*") as archive:
            compressed = _is_compressed(path)
            for info in archive:
                name = _check_name(info.name)
                if info.issym() or info.islnk():
                    raise InvalidInput(
                        f"archive member {info.name!r} is a link; links are refused",
                        member=info.name,
                    )
                if info.isdir():
                    continue
                if not info.isreg():
                    raise InvalidInput(
                        f"archive member {info.name!r} is not a regular file", member=info.name
                    )
                if not compressed and info.offset_data + info.size > length:
                    raise InvalidInput(
                        f"archive member {info.name!r} claims {info.size} bytes but the "
                        "archive ends before them",
                        member=info.name,
                    )
                members.append(Member(name=name, size=info.size))
            if compressed:
                # A compressed stream cannot be measured from its headers: read it through.
                for info in archive.getmembers():
                    if info.isreg():
                        _read_exactly(archive, info)
    except tarfile.TarError as exc:
        raise InvalidInput(f"{path.name}: broken tar archive ({exc})") from None
    except (EOFError, OSError) as exc:
        raise InvalidInput(f"{path.name}: the archive is truncated ({exc})") from None
    return members


def _is_compressed(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(6)
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))


def _read_exactly(archive: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    handle = archive.extractfile(info)
    if handle is None:
        return
    count = 0
    while chunk := handle.read(1 << 20):
        count += len(chunk)
    if count != info.size:
        raise InvalidInput(
            f"archive member {info.name!r} holds {count} bytes, not the {info.size} it claims",
            member=info.name,
        )


def _check_zip(path: Path) -> list[Member]:
    members: list[Member] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _check_name(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise InvalidInput(
                        f"archive member {info.filename!r} is a link; links are refused",
                        member=info.filename,
                    )
                if info.is_dir():
                    continue
                if mode not in (0, 0o100000):
                    raise InvalidInput(
                        f"archive member {info.filename!r} is not a regular file",
                        member=info.filename,
                    )
                count = 0
                with archive.open(info) as handle:
                    while chunk := handle.read(1 << 20):
                        count += len(chunk)
                        if count > info.file_size:
                            break
                if count != info.file_size:
                    raise InvalidInput(
                        f"archive member {info.filename!r} holds a different number of bytes "
                        f"than the {info.file_size} it claims",
                        member=info.filename,
                    )
                members.append(Member(name=name, size=info.file_size))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{path.name}: broken zip archive ({exc})") from None
    except (EOFError, OSError) as exc:
        raise InvalidInput(f"{path.name}: the archive is truncated ({exc})") from None
    return members


def extract(path: Path, destination: Path) -> list[Path]:
    """Check, then unpack the regular files of ``path`` under ``destination``."""
    members = {m.name for m in check(path)}
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    written: list[Path] = []

    def target(name: str) -> Path:
        out = (root / name).resolve()
        if root not in out.parents:  # belt and braces: check() already refused it
            raise InvalidInput(f"archive member {name!r} leaves the archive", member=name)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    if kind_of(path) == "zip":
        with zipfile.ZipFile(path) as zipped:
            for entry in zipped.infolist():
                name = entry.filename.replace("\\", "/")
                if name in members:
                    out = target(name)
                    with zipped.open(entry) as source, out.open("wb") as sink:
                        _copy(source, sink)
                    written.append(out)
    else:
        with tarfile.open(path, "r:*") as archive:
            for info in archive:
                name = info.name.replace("\\", "/")
                if info.isreg() and name in members:
                    handle = archive.extractfile(info)
                    if handle is None:
                        continue
                    out = target(name)
                    with handle, out.open("wb") as sink:
                        _copy(handle, sink)
                    written.append(out)
    return written


def _copy(source: object, sink: object) -> None:
    read = source.read  # type: ignore[attr-defined]
    write = sink.write  # type: ignore[attr-defined]
    while chunk := read(1 << 20):
        write(chunk)
