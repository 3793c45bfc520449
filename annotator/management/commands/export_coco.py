from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from annotator.management.commands._exporting import ExportCommand


class Command(ExportCommand):
    help = "Export a project as COCO instances JSON (with its images in a .tar)."
    format = "coco"

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--masks-as", choices=["rle", "polygons"], default="rle")

    def params(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"masks_as": options["masks_as"]}
