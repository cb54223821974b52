"""The demo chat page at ``/``: a client of the public API, served by the app."""
