"""Django's PBKDF2 hasher, counting the passwords it checks, for tests of the login lockout."""

import threading

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class CountingPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    checked = 0
    _lock = threading.Lock()

    def verify(self, password: str, encoded: str) -> bool:
        with self._lock:
            type(self).checked += 1
        return super().verify(password, encoded)
