"""Starting or joining Ray for every `--ray [local|auto|ADDRESS]` option, in one place.

`index build --ray` (index/ray_embed.py) and `search --queries FILE --ray` (discff_cli/search/ray.py)
take the same option and must mean the same thing by it: "local" starts Ray on this machine and
stops it afterwards, also on error; "auto" joins the cluster in RAY_ADDRESS; anything else is a
cluster address (ray://host:10001 or host:6379). It lives here, the lowest layer, because index/
may not import discff_cli; the CLI maps IndexError_ to its one-sentence errors.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from index.errors import IndexError_

INSTALL_HINT = "--ray needs Ray Data: install it with pip install -e '.[ray]' (or pip install 'ray[data]')."


def ray_available() -> bool:
    """Whether Ray Data can be imported (checked before any model loads)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str, init_options: dict[str, Any] | None = None) -> bool:
    """Start or join Ray; True when this call started it (so the caller also stops it).

    A Ray already initialised in this process (a test's, a notebook's) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, **(init_options or {})}
    try:
        if address == "local":
            options.setdefault("num_cpus", os.cpu_count() or 1)
            ray.init(**options)
        else:
            ray.init(address=None if address == "auto" else address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = os.environ.get("RAY_ADDRESS", "RAY_ADDRESS (unset)") if address == "auto" else address
        raise IndexError_(f"Could not start or join Ray at '{where}' ({str(exc).splitlines()[0][:160]}); "
                          "check the address, or use --ray local.") from None
    return True


@contextmanager
def ray_session(address: str, init_options: dict[str, Any] | None = None) -> Iterator[Any]:
    """`with ray_session("local") as ray:` — Ray connected inside, and shut down on leaving (error or not)
    when this session started it."""
    import ray

    started = connect(address, init_options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
