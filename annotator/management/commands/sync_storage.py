"""Copy every stored file between the local media folder and the S3-compatible bucket.

Moving a platform from local files to S3 (DECISIONS 20; docs/deploy.md):

    # with the bucket's settings in the environment (MASKLOOP_S3_BUCKET, AWS_*), and
    # MEDIA_ROOT still naming the local folder (its default: DATA_DIR/media)
    python manage.py sync_storage --to s3 --dry-run   # what would be copied
    python manage.py sync_storage --to s3             # copy; run again until it copies 0
    # then restart the web processes and workers with the bucket settings

``--to local`` copies the other way (bucket -> MEDIA_ROOT), to leave S3.

Every file under the source is copied under the same name: images and their originals,
embeddings, model checkpoints, exports, whatever else the platform stored. The database
keeps names relative to the storage, so nothing in it changes. A file already at the
destination with the same size and the same MD5 (S3's ETag for a single-part upload; read
and hashed otherwise) is skipped, so the command can be run again at any time, e.g. once
while the platform still runs and once more after stopping it. A differing one is replaced.
At the end, every file the database names (FileFields) is checked at the destination; a
missing one is reported and makes the command fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

CHUNK = 1 << 20


@dataclass
class SyncReport:
    copied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: int = 0
    bytes_copied: int = 0
    missing: list[str] = field(default_factory=list)  # named by the database, absent


def walk(storage: Storage, folder: str = "") -> Iterator[str]:
    """Every file name under ``folder``, recursively (names as the storage takes them)."""
    directories, files = storage.listdir(folder)
    for name in sorted(files):
        yield f"{folder}/{name}" if folder else name
    for directory in sorted(directories):
        yield from walk(storage, f"{folder}/{directory}" if folder else directory)


def fingerprint(storage: Storage, name: str) -> str:
    """The file's MD5, hex: S3's ETag where that is the MD5 (a single-part upload; no
    download then), else the content read and hashed."""
    with storage.open(name, "rb") as handle:
        etag = str(getattr(getattr(handle, "obj", None), "e_tag", "") or "").strip('"')
        if len(etag) == 32 and "-" not in etag:
            return etag
        digest = hashlib.md5(usedforsecurity=False)
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        return digest.hexdigest()


def same_file(source: Storage, target: Storage, name: str) -> bool:
    if not target.exists(name) or source.size(name) != target.size(name):
        return False
    return fingerprint(source, name) == fingerprint(target, name)


def copy_file(source: Storage, target: Storage, name: str) -> int:
    """``name`` from source to target under exactly that name; returns its size."""
    if target.exists(name):
        target.delete(name)  # storages that never overwrite would add a suffix otherwise
    with source.open(name, "rb") as handle:
        stored = target.save(name, File(handle, name=name))
    if stored != name:
        raise CommandError(f"the destination stored {name!r} as {stored!r}")
    return int(target.size(name))


def referenced_names() -> list[str]:
    """Every file name a FileField of an installed model holds."""
    names: list[str] = []
    for model in apps.get_models():
        for f in model._meta.get_fields():
            if isinstance(f, models.FileField):
                values = model._default_manager.exclude(**{f.name: ""}).values_list(
                    f.name, flat=True
                )
                names.extend(v for v in values.iterator() if v)
    return names


def sync(source: Storage, target: Storage, *, dry_run: bool, echo: Any = None) -> SyncReport:
    report = SyncReport()
    for name in walk(source):
        if same_file(source, target, name):
            report.skipped += 1
            continue
        exists = target.exists(name)
        if echo is not None:
            echo(f"{'would ' if dry_run else ''}{'replace' if exists else 'copy'} {name}")
        (report.replaced if exists else report.copied).append(name)
        report.bytes_copied += (
            int(source.size(name)) if dry_run else copy_file(source, target, name)
        )
    # After a dry run nothing moved: a name is missing if neither side has it.
    for name in referenced_names():
        if not target.exists(name) and (not dry_run or not source.exists(name)):
            report.missing.append(name)
    return report


class Command(BaseCommand):
    help = (
        "Copy every stored file (images, embeddings, checkpoints, exports) from the local media "
        "folder to the configured S3 bucket (--to s3), or back (--to local); idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            choices=("s3", "local"),
            default="s3",
            help="s3: MEDIA_ROOT -> the bucket; local: the bucket -> MEDIA_ROOT",
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would be copied")

    def handle(self, *args: Any, to: str, dry_run: bool, **options: Any) -> None:
        bucket = storages["default"]
        if isinstance(bucket, FileSystemStorage):
            raise CommandError(
                "no S3 storage is configured: set MASKLOOP_S3_BUCKET (and AWS_S3_ENDPOINT_URL, "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for this command, and keep MEDIA_ROOT "
                "naming the local folder (docs/deploy.md)"
            )
        local = FileSystemStorage(location=settings.MEDIA_ROOT)
        if to == "s3" and not local.exists(""):
            raise CommandError(f"the local media folder {local.location} does not exist")
        source, target = (local, bucket) if to == "s3" else (bucket, local)
        where = {
            "s3": f"{local.location} -> the bucket",
            "local": f"the bucket -> {local.location}",
        }
        self.stdout.write(f"{'dry run: ' if dry_run else ''}{where[to]}")
        verbose = int(options.get("verbosity", 1)) >= 2
        report = sync(source, target, dry_run=dry_run, echo=self.stdout.write if verbose else None)
        verb = "would copy" if dry_run else "copied"
        self.stdout.write(
            f"{verb} {len(report.copied)} new and {len(report.replaced)} changed files "
            f"({report.bytes_copied / 1e6:.1f} MB); {report.skipped} already identical"
        )
        if report.missing:
            for name in report.missing[:20]:
                self.stderr.write(f"missing: {name}")
            raise CommandError(
                f"{len(report.missing)} files named by the database "
                f"{'would be missing' if dry_run else 'are missing'} at the destination"
            )
        self.stdout.write(self.style.SUCCESS("every file the database names is there"))
