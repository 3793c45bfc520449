"""Copy every row of this platform's database into a fresh database, e.g. SQLite -> PostgreSQL.

    # the platform stopped (no web process, no worker writing); DATABASE_URL unset (SQLite in
    # the data dir) or naming the database to leave
    python manage.py move_database postgres://maskloop:PASSWORD@db-host:5432/maskloop
    # then start everything with DATABASE_URL=postgres://maskloop:PASSWORD@db-host:5432/maskloop

What it does, and why not ``dumpdata`` / ``loaddata`` (docs/deploy.md shows those too, for
small installs):

- applies the migrations to the target (which must hold no data yet);
- copies every table, content types and permissions included, *with their primary keys*, so
  that every foreign key, generic relation (admin log -> content type) and id that users,
  scripts, exports or log lines know stays valid; ``loaddata`` of a default ``dumpdata``
  clashes with the content types and permissions ``migrate`` creates, and natural keys only
  fix the tables that have them;
- inserts rows as they are (raw, like ``loaddata``): ``auto_now`` timestamps keep their
  values, and no ``save()`` or signal runs;
- streams in batches inside one transaction on the target, so a project of millions of masks
  is not held in memory (``loaddata`` parses the whole file), and a failure leaves the target
  as it was; foreign keys are checked at the commit (Django creates them deferrable);
- sets the target's id sequences past the copied ids, and checks every table's row count.

Stored files (images, embeddings, ...) are not in the database: ``sync_storage`` moves them.
"""

from __future__ import annotations

from typing import Any

import dj_database_url
from django.apps import apps
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction

TARGET = "move_target"
#: Query parameters per INSERT stay well under PostgreSQL's 65,535 (and SQLite's limit).
MAX_PARAMETERS = 30_000


def copied_models() -> list[type[models.Model]]:
    """Every model with a table of its own: concrete, managed, many-to-many tables included."""
    return [
        m
        for m in apps.get_models(include_auto_created=True)
        if m._meta.managed and not m._meta.proxy and not m._meta.swapped
    ]


def add_target(url: str) -> None:
    """The target database as the connection alias ``TARGET``."""
    config = dj_database_url.parse(url)
    databases = connections.configure_settings(
        {DEFAULT_DB_ALIAS: connections.settings[DEFAULT_DB_ALIAS], TARGET: config}
    )
    connections.settings[TARGET] = databases[TARGET]


def copy_model(model: type[models.Model], batch: int) -> int:
    """Rows of ``model`` from the default database into the target, raw; returns how many."""
    fields = list(model._meta.local_concrete_fields)
    per_insert = max(1, min(batch, MAX_PARAMETERS // max(1, len(fields))))
    rows = model._base_manager.using(DEFAULT_DB_ALIAS).order_by("pk")
    pending: list[models.Model] = []
    count = 0
    manager: Any = model._base_manager
    for row in rows.iterator(chunk_size=per_insert):
        pending.append(row)
        if len(pending) == per_insert:
            manager._insert(pending, fields=fields, using=TARGET, raw=True)
            count += len(pending)
            pending = []
    if pending:
        manager._insert(pending, fields=fields, using=TARGET, raw=True)
        count += len(pending)
    return count


def move(url: str, *, batch: int = 1000, echo: Any = print) -> dict[str, int]:
    """Migrate the target, copy every table into it, reset its sequences, compare counts.
    Returns rows copied per model label."""
    add_target(url)
    source, target = connections[DEFAULT_DB_ALIAS], connections[TARGET]
    if source.settings_dict["NAME"] == target.settings_dict["NAME"] and (
        source.vendor == target.vendor
    ):
        raise CommandError("the target is the database this platform uses")
    echo(f"migrating the target ({target.vendor} {target.settings_dict['NAME']})")
    call_command("migrate", database=TARGET, interactive=False, verbosity=0)
    made_by_migrate = {ContentType, Permission}
    holding = [
        f"{m._meta.label} ({n})"
        for m in copied_models()
        if m not in made_by_migrate and (n := m._base_manager.using(TARGET).count())
    ]
    if holding:
        raise CommandError(
            "the target already holds data: " + ", ".join(holding[:10]) + "; give a fresh one"
        )
    copied: dict[str, int] = {}
    with transaction.atomic(using=TARGET):
        # migrate's own content types and permissions give way to the source's, ids and all.
        Permission.objects.using(TARGET).all().delete()
        ContentType.objects.using(TARGET).all().delete()
        for model in copied_models():
            copied[model._meta.label] = n = copy_model(model, batch)
            if n:
                echo(f"  {model._meta.label}: {n} rows")
        # New rows on the target must get ids after the copied ones.
        statements = target.ops.sequence_reset_sql(no_style(), copied_models())
        with target.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
    ContentType.objects.clear_cache()
    differ = []
    for model in copied_models():
        label = model._meta.label
        in_source = model._base_manager.using(DEFAULT_DB_ALIAS).count()
        in_target = model._base_manager.using(TARGET).count()
        if not copied[label] == in_source == in_target:
            differ.append(f"{label}: {copied[label]} copied, {in_source} -> {in_target}")
    if differ:
        raise CommandError("row counts differ after the copy:\n" + "\n".join(differ))
    return copied


class Command(BaseCommand):
    help = (
        "Copy every row of this platform's database (DATABASE_URL, SQLite by default) into a "
        "fresh database given by its URL, e.g. postgres://user:password@host:5432/name."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("target", help="the new database's URL (it must hold no data)")
        parser.add_argument("--batch", type=int, default=1000, help="rows per INSERT (at most)")

    def handle(self, *args: Any, target: str, batch: int, **options: Any) -> None:
        copied = move(target, batch=batch, echo=self.stdout.write)
        self.stdout.write(
            self.style.SUCCESS(
                f"{sum(copied.values())} rows of {sum(1 for n in copied.values() if n)} tables "
                "copied; every table's row count matches. Now set DATABASE_URL to the new "
                "database."
            )
        )
