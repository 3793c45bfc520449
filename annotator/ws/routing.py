from django.urls import path

from annotator.ws.annotate import AnnotateConsumer
from annotator.ws.consumers import ProjectEventsConsumer

websocket_urlpatterns = [
    path("ws/projects/<int:project_id>/events/", ProjectEventsConsumer.as_asgi()),
    path("ws/images/<int:image_id>/annotate/", AnnotateConsumer.as_asgi()),
]
