from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("demo.urls")),
    path("", include("conversations.urls")),
]

handler400 = "conversations.errors.bad_request"
handler403 = "conversations.errors.permission_denied"
handler404 = "conversations.errors.page_not_found"
handler500 = "conversations.errors.server_error"
