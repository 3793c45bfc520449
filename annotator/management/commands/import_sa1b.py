from __future__ import annotations

from annotator.management.commands._exporting import ImportCommand


class Command(ImportCommand):
    help = "Import SA-1B records: .tar shards, an archive of shards, or a folder of JSON + images."
    format = "sa1b"
