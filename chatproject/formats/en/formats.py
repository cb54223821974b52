"""How the admin writes a moment: one form everywhere, to the second, with its zone.

Django's English default ("Dec. 3, 2026, 2:05 p.m.") drops the seconds and the
zone, so two messages a few seconds apart looked the same to support staff.
"""

DATETIME_FORMAT = "j M Y, H:i:s T"
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
DATE_FORMAT = "j M Y"
