from django.urls import path
from django.views.generic import TemplateView

# The page is static: all it knows about a conversation it reads from the API
# in the browser, so a template view with no context is all the server does.
urlpatterns = [
    path("", TemplateView.as_view(template_name="demo/index.html"), name="demo"),
]
