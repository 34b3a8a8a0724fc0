"""Tests against real system parts: coturn, Java's keytool, GStreamer's webrtcbin, network
namespaces with NATs made by iptables (``nox -s integration``).

A package, so that its modules are ``integration.test_*`` and may share a basename with the
unit-test module of ``tests/`` they complete. ``conftest.py`` gives every test here the
``integration`` marker.
"""
