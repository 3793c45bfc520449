"""Click to mask: the REST endpoint and the annotation websocket, answered by GrabCut before
any version is promoted and by the promoted SAM version after, with stored embeddings."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from annotator.asgi import application
from annotator.models import ModelVersion
from engine import embeddings, images, rle
from tests.annotator.fixtures import tiny_checkpoint
from tests.annotator.test_websocket import session_headers


def disc_image(width: int = 120, height: int = 90) -> tuple[bytes, np.ndarray]:
    """A red disc on a noisy grey background, and its true mask."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    disc = (xx - 60) ** 2 + (yy - 45) ** 2 < 25**2
    pixels[disc] = [220, 30, 30]
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def decode(counts: str, image: Any) -> np.ndarray:
    return rle.to_mask(rle.Rle(image.height, image.width, counts))


@pytest.fixture
def disc(project_factory: Any) -> tuple[Any, Any, np.ndarray]:
    project = project_factory()
    data, truth = disc_image()
    image = images.store(project, images.prepare(data, "disc.png"))
    embeddings.memory.clear()
    return project, image, truth


def promote_tiny_sam(project: Any, number: int = 0, name: str = "vit_tiny_test") -> ModelVersion:
    ModelVersion.objects.filter(project=project, state="promoted").update(state="retired")
    version = ModelVersion.objects.create(
        project=project, number=number, state="promoted", config={"name": name}
    )
    version.checkpoint.save(f"v{number}.pth", ContentFile(tiny_checkpoint(name)), save=True)
    return version


@pytest.mark.django_db
class TestRestPredict:
    def url(self, project: Any, image: Any) -> str:
        return f"/api/projects/{project.pk}/images/{image.pk}/predict/"

    def test_grabcut_answers_before_any_version(
        self, disc: Any, users: Any, client_for: Any
    ) -> None:
        project, image, truth = disc
        response = client_for(users["annotator"]).post(
            self.url(project, image), {"points": [[60, 45]], "labels": [1]}, format="json"
        )
        assert response.status_code == 200, response.data
        assert response.data["model"] == "grabcut"
        assert response.data["size"] == [90, 120]
        best = response.data["masks"][0]
        assert best["score"] is None  # GrabCut has no IoU estimate
        assert iou(decode(best["counts"], image), truth) > 0.85

    def test_the_promoted_sam_version_answers_with_three_candidates(
        self, disc: Any, users: Any, client_for: Any, settings: Any
    ) -> None:
        project, image, _ = disc
        version = promote_tiny_sam(project)
        client = client_for(users["annotator"])
        body = {"points": [[60, 45], [10, 10]], "labels": [1, 0], "multimask": True}
        first = client.post(self.url(project, image), body, format="json").data
        assert first["model"] == f"v{version.pk}"
        assert first["embedding"] == "computed"
        assert len(first["masks"]) == 3
        scores = [m["score"] for m in first["masks"]]
        assert scores == sorted(scores, reverse=True)  # best first
        for mask in first["masks"]:
            assert decode(mask["counts"], image).shape == (90, 120)
        stored = Path(settings.MEDIA_ROOT) / embeddings.embedding_name(image.sha256, version)
        assert stored.exists()
        from model.predictor import ImageEmbedding

        assert ImageEmbedding.from_bytes(stored.read_bytes()).embedding.dtype.itemsize == 2  # fp16
        again = client.post(self.url(project, image), body, format="json").data
        assert again["embedding"] == "memory"
        assert [m["counts"] for m in again["masks"]] == [m["counts"] for m in first["masks"]]
        embeddings.memory.clear()
        assert (
            client.post(self.url(project, image), body, format="json").data["embedding"] == "disk"
        )
        single = client.post(
            self.url(project, image), {**body, "multimask": False}, format="json"
        ).data
        assert len(single["masks"]) == 1

    def test_a_new_version_does_not_use_the_old_embeddings(
        self, disc: Any, users: Any, client_for: Any
    ) -> None:
        project, image, _ = disc
        old = promote_tiny_sam(project, 0)
        client = client_for(users["annotator"])
        body = {"points": [[60, 45]], "labels": [1]}
        client.post(self.url(project, image), body, format="json")
        new = promote_tiny_sam(project, 1)
        answer = client.post(self.url(project, image), body, format="json").data
        assert answer["model"] == f"v{new.pk}" and answer["embedding"] == "computed"
        assert embeddings.has_embedding(image, old) and embeddings.has_embedding(image, new)

    def test_an_hq_version_answers_with_and_without_its_hq_head(
        self, disc: Any, users: Any, client_for: Any, settings: Any
    ) -> None:
        project, image, _ = disc
        version = promote_tiny_sam(project, name="vit_tiny_test_hq")
        client = client_for(users["annotator"])
        body = {"points": [[60, 45]], "labels": [1]}
        hq = client.post(self.url(project, image), body, format="json").data
        assert hq["hq"] is True and len(hq["masks"]) == 1  # SAM's best + the HQ mask
        # The stored embedding carries HQ-SAM's early feature: a click costs no encoder work.
        from model.predictor import ImageEmbedding

        stored = Path(settings.MEDIA_ROOT) / embeddings.embedding_name(image.sha256, version)
        early = ImageEmbedding.from_bytes(stored.read_bytes()).early
        assert early is not None and early.dtype.itemsize == 2
        on = client.post(self.url(project, image), {**body, "hq": True}, format="json").data
        assert on["embedding"] == "memory" and on["masks"] == hq["masks"]
        off = client.post(self.url(project, image), {**body, "hq": False}, format="json").data
        assert len(off["masks"]) == 3  # the base model's three candidates
        assert hq["masks"][0]["counts"] not in [m["counts"] for m in off["masks"]]
        bad = client.post(self.url(project, image), {**body, "hq": "yes"}, format="json")
        assert bad.status_code == 400 and "hq" in bad.data["detail"]

    def test_hq_on_a_plain_version_is_a_clear_400(
        self, disc: Any, users: Any, client_for: Any
    ) -> None:
        project, image, _ = disc
        promote_tiny_sam(project)
        client = client_for(users["annotator"])
        body = {"points": [[60, 45]], "labels": [1]}
        assert client.post(self.url(project, image), body, format="json").data["hq"] is False
        for hq in (True, False):
            response = client.post(self.url(project, image), {**body, "hq": hq}, format="json")
            assert response.status_code == 400
            assert "no HQ head" in response.data["detail"]

    @pytest.mark.parametrize(
        "body,reason",
        [
            ({}, "at least one point or a box"),
            ({"points": [[10, 10]], "labels": [2]}, "1 (positive) or 0"),
            ({"points": [[10, 10]], "labels": [1, 0]}, "same length"),
            ({"points": [[500, 10]], "labels": [1]}, "inside the image"),
            ({"points": [["a", 1]], "labels": [1]}, "numbers"),
            ({"box": [50, 50, 10, 10]}, "x1 > x0"),
            ({"points": [[1, 1]], "labels": [1], "mask_input": "abc:0"}, "websocket"),
        ],
    )
    def test_bad_prompts_are_a_clear_400(
        self, body: dict[str, Any], reason: str, disc: Any, users: Any, client_for: Any
    ) -> None:
        project, image, _ = disc
        response = client_for(users["annotator"]).post(
            self.url(project, image), body, format="json"
        )
        assert response.status_code == 400
        assert reason in response.data["detail"]

    def test_a_broken_checkpoint_is_a_clear_503(
        self, disc: Any, users: Any, client_for: Any
    ) -> None:
        project, image, _ = disc
        version = ModelVersion.objects.create(
            project=project, number=5, state="promoted", config={"name": "vit_tiny_test"}
        )
        version.checkpoint.save("broken.pth", ContentFile(b"definitely not torch"), save=True)
        response = client_for(users["annotator"]).post(
            self.url(project, image), {"points": [[60, 45]], "labels": [1]}, format="json"
        )
        assert response.status_code == 503
        assert response.data["error"] == "model_unavailable"


async def talk(
    path: str, headers: Any, messages: list[Any]
) -> tuple[bool, Any, list[dict[str, Any]]]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=30)
    answers: list[dict[str, Any]] = []
    if connected:
        answers.append(await communicator.receive_json_from(timeout=60))
        for message in messages:
            if callable(message):
                message = message(answers)
            await communicator.send_to(
                text_data=message if isinstance(message, str) else json.dumps(message)
            )
            answers.append(await communicator.receive_json_from(timeout=60))
        await communicator.disconnect()
    else:
        # A refused consumer still waits for the client's disconnect: send it and let the
        # consumer finish here, so that no database call of its is left pending when the
        # event loop of async_to_sync closes (a CI run once hung there for 600 s).
        await communicator.send_input({"type": "websocket.disconnect", "code": code})
        await communicator.wait(timeout=30)
    return connected, code, answers


@pytest.mark.django_db(transaction=True)
class TestAnnotateWebsocket:
    def path(self, image: Any) -> str:
        return f"/ws/images/{image.pk}/annotate/"

    def test_clicks_refine_the_previous_mask(self, disc: Any, users: Any) -> None:
        project, image, _ = disc
        version = promote_tiny_sam(project)
        headers = session_headers(users["annotator"])
        click = {"type": "predict", "id": 1, "points": [[60, 45]], "labels": [1], "multimask": True}
        follow_up = lambda answers: {  # noqa: E731
            "type": "predict",
            "id": 2,
            "points": [[60, 45], [5, 5]],
            "labels": [1, 0],
            "mask_input": f"{answers[-1]['handle']}:0",
            "multimask": False,
        }
        connected, _, answers = async_to_sync(talk)(self.path(image), headers, [click, follow_up])
        assert connected
        ready, first, second = answers
        assert ready["type"] == "ready"
        assert ready["model"] == f"v{version.pk}" and ready["embedding"] == "computed"
        assert ready["image"] == {"id": image.pk, "width": 120, "height": 90}
        assert first["type"] == "prediction" and first["id"] == 1 and len(first["masks"]) == 3
        assert second["type"] == "prediction" and second["id"] == 2 and len(second["masks"]) == 1

    def test_grabcut_answers_on_the_websocket_too(self, disc: Any, users: Any) -> None:
        project, image, truth = disc
        headers = session_headers(users["reviewer"])
        click = {"type": "predict", "id": 9, "points": [[60, 45]], "labels": [1]}
        _, _, answers = async_to_sync(talk)(self.path(image), headers, [click])
        assert answers[0]["model"] == "grabcut"
        assert iou(decode(answers[1]["masks"][0]["counts"], image), truth) > 0.85
        assert answers[1]["handle"] is None

    def test_malformed_messages_get_an_error_and_the_socket_stays(
        self, disc: Any, users: Any
    ) -> None:
        project, image, _ = disc
        headers = session_headers(users["annotator"])
        messages = [
            "not json",
            json.dumps([1, 2]),
            {"type": "dance", "id": 3},
            {"type": "predict", "id": 4, "points": [[1, 1]], "labels": [7]},
            {"type": "predict", "id": 5, "points": [[1, 1]], "labels": [1], "mask_input": "nope:0"},
            "x" * 70000,
            {"type": "predict", "id": 6, "points": [[60, 45]], "labels": [1]},
        ]
        connected, _, answers = async_to_sync(talk)(self.path(image), headers, messages)
        assert connected
        errors = answers[1:-1]
        assert [a["type"] for a in errors] == ["error"] * 6
        assert errors[2]["id"] == 3 and "unknown message type" in errors[2]["detail"]
        assert "1 (positive) or 0" in errors[3]["detail"]
        assert "unknown or expired mask handle" in errors[4]["detail"]
        assert answers[-1]["type"] == "prediction" and answers[-1]["id"] == 6

    @pytest.mark.parametrize("who", ["outsider", "anonymous"])
    def test_non_members_cannot_open_the_image(self, who: str, disc: Any, users: Any) -> None:
        project, image, _ = disc
        headers = (
            [(b"origin", b"http://127.0.0.1")]
            if who == "anonymous"
            else session_headers(users[who])
        )
        connected, code, _ = async_to_sync(talk)(self.path(image), headers, [])
        assert not connected and code == 4403

    def test_a_foreign_origin_is_refused(self, disc: Any, users: Any) -> None:
        project, image, _ = disc
        headers = session_headers(users["annotator"], origin="http://evil.example")
        connected, _, _ = async_to_sync(talk)(self.path(image), headers, [])
        assert not connected

    def test_a_missing_image_is_refused_like_a_foreign_one(self, users: Any) -> None:
        connected, code, _ = async_to_sync(talk)(
            "/ws/images/999999/annotate/", session_headers(users["admin"]), []
        )
        assert not connected and code == 4403


@pytest.mark.django_db
def test_the_admin_page_precomputes_embeddings(disc: Any, users: Any, client: Any) -> None:
    from annotator.models import Job

    project, image, _ = disc
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    client.force_login(users["admin"])
    action = {"action": "precompute_embeddings", "_selected_action": [project.pk]}
    response = client.post("/admin/annotator/project/", action, follow=True)
    assert "GrabCut needs none" in response.content.decode()
    version = promote_tiny_sam(project)
    response = client.post("/admin/annotator/project/", action, follow=True)
    job = Job.objects.get(kind="embed_images")
    assert f"embedding job {job.pk} queued" in response.content.decode()
    assert job.params == {"version": version.pk}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["header", "query", "wrong"])
def test_scripts_open_the_websocket_with_a_token(how: str, disc: Any, users: Any) -> None:
    from rest_framework.authtoken.models import Token

    project, image, _ = disc
    key = Token.objects.create(user=users["annotator"]).key
    path = f"/ws/images/{image.pk}/annotate/"
    headers = [(b"origin", b"http://127.0.0.1")]
    if how == "header":
        headers.append((b"authorization", f"Token {key}".encode()))
    elif how == "query":
        path += f"?token={key}"
    else:
        path += "?token=not-a-token"
    click = {"type": "predict", "id": 1, "points": [[60, 45]], "labels": [1]}
    connected, code, answers = async_to_sync(talk)(path, headers, [click] if how != "wrong" else [])
    if how == "wrong":
        assert not connected and code == 4403
    else:
        assert connected and answers[1]["type"] == "prediction"


@pytest.mark.django_db
@pytest.mark.parametrize("zoom", [True, False])
def test_later_clicks_on_a_small_object_are_answered_on_a_crop(
    zoom: bool, project_factory: Any, settings: Any
) -> None:
    from engine.stages import assisted
    from model.predictor import SamPredictor
    from model.zoom import ZoomInPredictor

    settings.MASKLOOP_ZOOM_IN = zoom
    project = project_factory()
    data, _ = disc_image(width=900, height=600)  # the disc is small in a large photo
    image = images.store(project, images.prepare(data, "large.png"))
    embeddings.memory.clear()
    promote_tiny_sam(project)
    version = project.promoted_version()
    session = assisted.open_session(image, version)
    first = session.predict(
        assisted.Prompt(np.array([[60.0, 45.0]]), np.array([1]), None, None, True)
    )
    second = session.predict(
        assisted.Prompt(
            np.array([[60.0, 45.0], [70.0, 50.0]]),
            np.array([1, 1]),
            None,
            # No previous mask: a random model's masks are anywhere, and the crop is made
            # around them; without one it is made around the clicks.
            None,
            False,
        )
    )
    assert first.handle is not None and len(second.candidates) == 1
    if zoom:
        assert isinstance(session.predictor, ZoomInPredictor)
        crop = session.predictor._crop_box
        # The crop holds both clicks and is far smaller than the photo.
        assert crop is not None and crop[0] <= 60 and crop[2] > 70 and crop[2] - crop[0] < 900
    else:
        assert type(session.predictor) is SamPredictor
