"""The rtckit application server: ``rtckit demo`` and ``rtckit serve``."""

__all__: list[str] = []
