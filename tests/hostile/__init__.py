"""The hostile-input suite: every case against every server factory (see ``targets.py``).

Layout: ``targets.py`` starts the servers (add a factory to run the cases on another server or
transport), ``harness.py`` holds the checks every case passes (server up, canary round trip,
memory and descriptors back, no traceback in the logs) and the raw-socket helpers,
``test_http.py`` the attacks on HTTP connections, ``test_websocket.py`` those on WebSocket frames
and signaling messages. To add a case, write one ``async def test_...(target, canary)`` whose
attack runs inside ``async with hostile_case(target, canary):`` and asserts the documented
answer.
"""
