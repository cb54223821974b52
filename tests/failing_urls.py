"""The service's URLs plus one view that fails, for the tests of what a failure logs.

Test code only (pytest.mark.urls): nothing the service serves fails on purpose.
"""

from django.urls import path

from chatproject.urls import urlpatterns as service_urlpatterns


class Failure(Exception):
    pass


def fail(request):
    raise Failure("a test view failed on purpose")


urlpatterns = [path("fails-on-purpose", fail), *service_urlpatterns]
