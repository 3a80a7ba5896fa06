"""A port already taken, said in one line: which component, which port, which setting moves it.

Every server the platform binds (the hub, each engine's REST) turns ``EADDRINUSE`` into
``PortInUse`` at the bind, where the component is known; the CLI prints its message and exits 1
at once, with no traceback.
"""

from __future__ import annotations

import errno


class PortInUse(OSError):
    def __init__(self, component: str, host: str, port: int, variable: str) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"{component}: port {port} on {host} is already in use "
            f"(another nautilus running? set {variable} to move it, 0 = any free port)",
        )
        self.component = component
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


def is_port_in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE
