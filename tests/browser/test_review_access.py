"""The server side of the review page (Django's test client, no browser): who may open it, the
project page's link with the count of masks to review, and the annotation page opened by the
review's Fix button."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.test import Client

from annotator.models import Mask, ModelVersion
from engine import images, rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project_factory: Any) -> Any:
    """A project with one image and three masks of model v2 waiting for review."""
    project = project_factory("Review")
    image = images.store(project, images.prepare(png_bytes(40, 30, seed=1), "r.png"))
    version = ModelVersion.objects.create(project=project, number=2, state="promoted")
    masks = []
    for size in (5, 8, 11):
        pixels = np.zeros((30, 40), dtype=bool)
        pixels[2 : 2 + size, 3 : 3 + size] = True
        encoded = rle.from_mask(pixels)
        masks.append(
            Mask.objects.create(
                image=image,
                rle_counts=encoded.counts,
                bbox=rle.bbox(encoded),
                area=rle.area(encoded),
                source_stage="automatic",
                model_version=version,
                predicted_iou=0.93,
                stability_score=0.97,
            )
        )
    Mask.objects.filter(pk=masks[0].pk).update(review_state="accepted")
    return project, image, masks


def client(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def config_of(response: Any, element_id: str) -> dict[str, Any]:
    html = response.content.decode()
    start = html.index(f'<script id="{element_id}" type="application/json">')
    start = html.index(">", start) + 1
    return dict(json.loads(html[start : html.index("</script>", start)]))


def test_reviewers_and_admins_open_the_review_page(world: Any, users: Any) -> None:
    project, _, _ = world
    for name in ("reviewer", "admin"):
        response = client(users[name]).get(f"/projects/{project.pk}/review/")
        assert response.status_code == 200
        assert "csrftoken" in response.cookies
        config = config_of(response, "review-config")
        assert config["pending"] == 2
        assert config["source"] == "automatic"
        assert config["user"]["role"] == name
        assert config["urls"]["api"] == f"/api/projects/{project.pk}/"
        assert config["urls"]["fix"] == (
            f"/projects/{project.pk}/images/{{image}}/annotate/?edit={{mask}}&review=1"
        )
        assert config["reference"] == {"iou_above_0_90": 0.94, "iou_above_0_75": 0.97}


def test_it_is_403_for_annotators_404_for_outsiders_and_asks_strangers_to_log_in(
    world: Any, users: Any
) -> None:
    project, _, _ = world
    url = f"/projects/{project.pk}/review/"
    assert client(users["annotator"]).get(url).status_code == 403
    assert client(users["outsider"]).get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/")


def test_the_project_page_links_reviewers_to_the_review_with_the_count(
    world: Any, users: Any
) -> None:
    project, _, _ = world
    html = client(users["reviewer"]).get(f"/projects/{project.pk}/").content.decode()
    assert f'href="/projects/{project.pk}/review/"' in html
    assert '<span class="badge" id="to-review">2 to review</span>' in html
    annotator = client(users["annotator"]).get(f"/projects/{project.pk}/").content.decode()
    assert "/review/" not in annotator


def test_the_fix_button_opens_the_mask_for_editing_in_review_mode(world: Any, users: Any) -> None:
    project, image, masks = world
    url = f"/projects/{project.pk}/images/{image.pk}/annotate/?edit={masks[1].pk}&review=1"
    response = client(users["reviewer"]).get(url)
    config = config_of(response, "annotate-config")
    assert config["edit"] == masks[1].pk
    assert config["review"] == {"mask": masks[1].pk, "url": f"/projects/{project.pk}/review/"}
    assert b"Back to review" in response.content

    # An annotator may edit the mask but not review it; no ?review=1, no review mode.
    annotator = config_of(client(users["annotator"]).get(url), "annotate-config")
    assert annotator["edit"] == masks[1].pk and annotator["review"] is None
    plain = client(users["reviewer"]).get(url.replace("&review=1", ""))
    assert config_of(plain, "annotate-config")["review"] is None
    assert b"Back to review" not in plain.content
    unopened = client(users["reviewer"]).get(f"/projects/{project.pk}/images/{image.pk}/annotate/")
    assert config_of(unopened, "annotate-config")["edit"] is None
