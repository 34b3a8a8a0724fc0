"""The rtckit application server: ``rtckit demo`` and ``rtckit serve``."""
