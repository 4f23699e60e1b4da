"""Whether a ZeroMQ socket has a peer, from the socket's monitor events.

ZeroMQ connects and reconnects in the background: a receiver whose sender is not
running (or listens elsewhere) waits without an error. The monitor's events say
when a TCP or IPC connection comes up (``connected`` on the side that connects,
``accepted`` on the side that binds) and when it goes (``disconnected``).
"""
from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
UP = (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED)

WATCHABLE = ("tcp", "ipc")
"""Transports whose connections the monitor reports (inproc ones it does not)."""


class PeerWatch:
    """Counts the connections of ``sock`` that are up. Attach it before the socket binds or
    connects, so that no event is missed; read it (``poll``) and close it on the thread that
    uses the socket."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self._mon: zmq.Socket | None = sock.get_monitor_socket(EVENTS)
        self.count = 0

    def poll(self) -> int:
        """Read the events that arrived, without waiting; the connections up now."""
        mon = self._mon
        while mon is not None:
            try:
                event = recv_monitor_message(mon, flags=zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event in UP:
                self.count += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.count = max(0, self.count - 1)
        return self.count

    def close(self) -> None:
        """Stop the monitor and close its socket; call before the watched socket is closed."""
        if self._mon is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass  # the watched socket is already closed
        self._mon.close(linger=0)
        self._mon = None


__all__ = ["WATCHABLE", "PeerWatch"]
