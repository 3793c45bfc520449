from django.urls import path

from annotator.ws import shutdown
from annotator.ws.annotate import AnnotateConsumer
from annotator.ws.consumers import ProjectEventsConsumer

# Under daphne: close every socket with a reconnect hint when the process is told to stop.
shutdown.install()

websocket_urlpatterns = [
    path("ws/projects/<int:project_id>/events/", ProjectEventsConsumer.as_asgi()),
    path("ws/images/<int:image_id>/annotate/", AnnotateConsumer.as_asgi()),
]
