from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotator.management.commands._project import find_project
from engine.errors import EngineError
from engine.stages import automatic


class Command(BaseCommand):
    help = (
        "Run the fully automatic stage in this process: a model version labels images alone "
        "(the same storage as the API's job: re-runs replace, interrupted runs resume)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument(
            "--model-version", type=int, help="model version id (default: the promoted one)"
        )
        parser.add_argument(
            "--images",
            default="pending",
            help='"pending" (not yet labelled by the version), "all", or ids such as 4,7,9',
        )
        parser.add_argument(
            "--preset",
            default=None,
            help='fast or sa1b (default: the project\'s settings["automatic"], else fast)',
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a generator parameter replacing the preset's, e.g. pred_iou_thresh=0.7",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        overrides: dict[str, Any] = {}
        for item in options["set"]:
            name, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--set {item!r}: write NAME=VALUE")
            try:
                overrides[name] = json.loads(value)
            except ValueError:
                raise CommandError(f"--set {item!r}: the value must be a number") from None
        images: str | list[int] = options["images"]
        if images not in automatic.SELECTIONS:
            try:
                images = [int(i) for i in str(images).split(",") if i.strip()]
            except ValueError:
                raise CommandError('--images: "pending", "all" or comma-separated ids') from None
        bar = tqdm(unit="image", disable=options["verbosity"] == 0)

        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = automatic.run_here(
                project,
                version_id=options["model_version"],
                images=images,
                preset=options["preset"],
                overrides=overrides,
                on_progress=on_progress,
            )
        except EngineError as exc:
            raise CommandError(exc.message) from None
        finally:
            bar.close()
        self.stdout.write(
            f"version {result['version']}: {result['images']} images labelled, "
            f"{result['masks']} new masks in {result['seconds']} s"
        )
        for failure in result["failures"]:
            self.stderr.write(f"image {failure['image']}: {failure['error']}")
