"""BGP speakers (backend bgp, Calico's model): a BIRD 2 daemon per k8s-node, and per router node peering.

- speakers.py  who speaks and with whom: a pure function of the plan (mesh, route reflectors, peers)
- daemon.py    each speaker's config (templates/bird.conf.j2), start inside its node's namespace, stop
- birdc.py     asking a daemon (birdc -s SOCKET) and parsing `show protocols` / `show route`

Both families, as Calico runs a dual-stack cluster: an IPv4 and an IPv6 session per peer between the
node addresses of each family, each carrying its own family's routes (speakers.py says why).

The phases (labkit.phases.bgp) start the daemons in `up`, start dead ones again in `apply`;
`down` stops them by their pid files like every server of a lab.
"""

from __future__ import annotations

from .birdc import BirdcError, ask, live, parse_protocols, parse_routes, sessions
from .daemon import TIMERS, BirdFiles, Timers, files_of, reconfigure, render, running, start, stop, write_config
from .speakers import Prefix, Session, Speaker, speakers

__all__ = ["TIMERS", "BirdFiles", "BirdcError", "Prefix", "Session", "Speaker", "Timers", "ask", "files_of",
           "live", "parse_protocols", "parse_routes", "reconfigure", "render", "running", "sessions", "speakers",
           "start", "stop", "write_config"]
