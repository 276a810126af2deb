"""A private key encrypted at rest, for real, inside the Debian 13 machine
(tests/platform): ``systemd-creds encrypt --with-key=host``, a quadlet unit
with ``LoadCredentialEncrypted=`` and ``Annotation=wg-pod.private-key=%d/...``
(systemd decrypts it into the unit's credentials directory while the unit
runs); the container fetches through its tunnel, and the plain key is
nowhere on disk, in the journal or in podman's storage afterwards.
Collected only inside the machine (see tests/platform/conftest.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import TEST_IMAGE, Lab, Peer, Podman, free_udp_port, run, wait_for

pytestmark = pytest.mark.podman

UNIT_DIR = Path("/etc/containers/systemd")
NAME = "wgpt-credential"
SERVICE = f"{NAME}.service"
CONTAINER = f"systemd-{NAME}"
CONFIG = Path("/etc/wg/wgpt-credential.conf")
ENCRYPTED = Path("/etc/credstore.encrypted/wgpt-wg0.key")
# Where the plain key could have been left: wg-pod's state, podman's
# storage, the journal's files, the configs, /tmp.
SEARCHED = ("/run/wg-pod", "/run/containers", "/var/lib/containers", "/var/log", "/etc", "/tmp")


@pytest.fixture
def unit(lab: Lab, peer: Peer) -> Iterator[str]:
    """The unit, its key-less config and its encrypted key; the plain key
    (returned) only in this process."""
    client = peer.add_client(listen_port=free_udp_port(), allowed_ips=["0.0.0.0/0", "::/0"])
    text = re.sub(r"^PrivateKey = .*\n", "", client.config, flags=re.MULTILINE)
    CONFIG.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    ENCRYPTED.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    run(
        ["systemd-creds", "encrypt", "--with-key=host", "--name=wg0.key", "-", str(ENCRYPTED)],
        input=client.private_key + "\n",
    )
    script = f"for i in 1 2 3 4 5; do timeout 5 wget -qO- {peer.url_v4} && break; sleep 1; done"
    UNIT_DIR.mkdir(parents=True, exist_ok=True)
    path = UNIT_DIR / f"{NAME}.container"
    path.write_text(
        "[Container]\n"
        f"Image={TEST_IMAGE}\n"
        f"Exec=sh -c '{script}; exec sleep 600'\n"
        f"Annotation=wg-pod.config={CONFIG}\n"
        "Annotation=wg-pod.delete-default=true\n"
        "Annotation=wg-pod.private-key=%d/wg0.key\n"
        "[Service]\n"
        f"LoadCredentialEncrypted=wg0.key:{ENCRYPTED}\n"
    )
    try:
        run(["systemctl", "daemon-reload"])
        yield client.private_key
    finally:
        run(["systemctl", "stop", SERVICE], check=False, timeout=120)
        for each in (path, CONFIG, ENCRYPTED):
            each.unlink(missing_ok=True)
        run(["systemctl", "daemon-reload"], check=False)
        run(["systemctl", "reset-failed"], check=False)


def test_a_key_encrypted_at_rest_starts_the_tunnel_and_is_written_nowhere(
    unit: str, lab: Lab, peer: Peer, podman: Podman
) -> None:
    run(["systemctl", "start", SERVICE], timeout=120)
    wait_for(
        lambda: peer.page in podman("logs", CONTAINER, check=False).stdout,
        timeout=40,
        what=f"the page in the logs of {CONTAINER}",
    )
    run(["journalctl", "--sync"], check=False)
    # The lab's own files (its key files, 0600) are the test's, not wg-pod's.
    exclude = f"--exclude-dir={lab.tmp.name}"
    found = run(["grep", "-rlF", exclude, "--", unit, *SEARCHED], check=False)
    assert found.stdout == "", f"the plain key is in: {found.stdout}"
    journal = run(["journalctl", "-q", "--no-pager", "-o", "cat"]).stdout
    assert unit not in journal
    run(["systemctl", "stop", SERVICE], timeout=120)
