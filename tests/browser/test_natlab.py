"""A headless Chromium inside a NAT lab namespace connects to an aiortc peer behind another NAT.

Chromium runs through the lab's launcher (``NatLab.chromium_launcher``: ``ip netns exec``, so
Playwright's pipes survive); it trusts the lab CA through its own NSS database for ``turns:``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rtckit.ice import IceConfig
from rtckit.ice.turn import TurnRestAuth
from rtckit.testing import require_executable, require_root
from rtckit.testing.browser import HOST_RESOLVER_RULES, launch_chromium
from rtckit.testing.natlab import NatLab, lab_tls, run_peer

SECRET = "natlab-browser-secret"

# The page is the offerer: data channel, ping/pong, ICE servers given explicitly.
_OFFER_JS = """
async (iceServers) => {
  const pc = new RTCPeerConnection({iceServers});
  window.pc = pc;
  const dc = pc.createDataChannel("natlab");
  window.pong = new Promise((resolve) => {
    dc.onmessage = (e) => { if (e.data === "pong") resolve(performance.now()); };
  });
  dc.onopen = () => dc.send("ping");
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
  });
  return {type: pc.localDescription.type, sdp: pc.localDescription.sdp};
}
"""

_ANSWER_JS = """
async ([answer, limitMs]) => {
  const started = performance.now();
  await window.pc.setRemoteDescription(answer);
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), limitMs));
  const pong = await Promise.race([window.pong, timeout]);
  let local = null, remote = null;
  const stats = await window.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      local = stats.get(pair.localCandidateId).candidateType;
      remote = stats.get(pair.remoteCandidateId).candidateType;
    }
  });
  return {
    connected: pong !== null,
    seconds: pong === null ? null : (pong - started) / 1000,
    state: window.pc.connectionState,
    local, remote,
  };
}
"""


@pytest.fixture
async def lab() -> AsyncIterator[NatLab]:
    require_root("network namespaces")
    require_executable("ip", hint="apt-get install iproute2")
    require_executable("iptables", hint="apt-get install iptables")
    require_executable("turnserver", hint="apt-get install coturn")
    require_executable("chromium", hint="apt-get install chromium")
    require_executable("certutil", hint="apt-get install libnss3-tools")
    async with NatLab() as lab:
        yield lab


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


async def _wait_json(path: Path, limit: float) -> dict[str, Any]:
    for _ in range(int(limit / 0.05)):
        data = _read_json(path)
        if data is not None:
            return data
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {limit} s")


@pytest.mark.parametrize(
    ("nat", "path"),
    [
        ("cone", "stun"),
        ("symmetric", "turn-udp"),
        ("symmetric", "turn-tcp"),
        ("symmetric", "turns"),
    ],
)
async def test_chromium_behind_nat_connects_to_aiortc(
    lab: NatLab, tmp_path: Path, nat: str, path: str
) -> None:
    await lab.add_host("alice", nat=nat)  # type: ignore[arg-type]
    await lab.add_host("bob", nat=nat)  # type: ignore[arg-type]
    signal_dir = tmp_path / "signal"
    signal_dir.mkdir()
    auth = TurnRestAuth(secrets=[SECRET])
    tls = lab_tls(tmp_path, lab.public_address)
    config = lab.coturn_config(auth, tls=tls)
    async with lab.run_coturn(config):
        stun, turn_udp, turn_tcp, turns = config.uris()
        if path == "stun":
            ice = IceConfig.from_uris([stun])
        else:
            uri = {"turn-udp": turn_udp, "turn-tcp": turn_tcp, "turns": turns}[path]
            ice = IceConfig(servers=[auth.ice_server([uri], "peer")])
        js_servers = ice.to_browser()["iceServers"]
        answerer = asyncio.create_task(
            run_peer(
                lab,
                "bob",
                "answer",
                signal_dir,
                ice_servers=ice,
                env={"SSL_CERT_FILE": str(tls.ca_file)},
                timeout=30,
            )
        )
        try:
            # The lab's public address is excluded from the resolver rules too: Chromium sends
            # TURN over TCP and TLS through its host resolver, which the MAP rule would answer
            # NOTFOUND even for an IP literal (the last --host-resolver-rules wins).
            rules = f"--host-resolver-rules={HOST_RESOLVER_RULES}, EXCLUDE {lab.public_address}"
            async with launch_chromium(
                executable_path=str(lab.chromium_launcher("alice", tmp_path, trust=tls.ca_file)),
                fake_media=False,
                extra_args=[rules],
            ) as browser:
                page = await browser.new_page()
                async with asyncio.timeout(20):
                    offer = await page.evaluate(_OFFER_JS, js_servers)
                (signal_dir / "offer.json").write_text(json.dumps(offer))
                answer = await _wait_json(signal_dir / "answer.json", 20)
                assert "abort" not in answer, answer
                outcome = await page.evaluate(_ANSWER_JS, [answer, 15000])
                (signal_dir / "done.json").write_text("{}")
            result = await answerer
        finally:
            if not answerer.done():
                answerer.cancel()
    assert outcome["connected"], (outcome, result.error, result.stderr[-2000:])
    assert result.connected, (result.error, result.stderr[-2000:])
    if path == "stun":
        assert outcome["remote"] == "srflx"
        assert result.remote_candidate_type in ("srflx", "prflx")
    else:
        assert "relay" in (outcome["local"], outcome["remote"])
        assert result.uses_relay
