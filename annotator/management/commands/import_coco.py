from __future__ import annotations

from annotator.management.commands._exporting import ImportCommand


class Command(ImportCommand):
    help = (
        "Import COCO instances (polygons, RLE, iscrowd) with their images: a folder holding "
        "annotations.json, an archive of one, or the JSON file with images beside it."
    )
    format = "coco"
