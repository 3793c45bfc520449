from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from annotator.management.commands._exporting import ExportCommand
from engine.exports import DEFAULT_SHARD_SIZE


class Command(ExportCommand):
    help = "Export a project as SA-1B .tar shards (per-image JSON beside each image)."
    format = "sa1b"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)

    def params(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"shard_size": options["shard_size"]}
