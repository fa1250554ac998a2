"""Whether the model hub can be reached, asked once and quickly.

On an offline machine huggingface_hub retries for a minute before failing; one TCP connect
with a short timeout lets every loader (OpenCLIP here, Stable Diffusion in discff_cli) fail
in seconds with a sentence that says what to download.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """False under HF_HUB_OFFLINE or when HF_ENDPOINT (default huggingface.co) does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
