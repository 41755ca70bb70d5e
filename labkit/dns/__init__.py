"""labkit.dns: the bundled cluster DNS server and its record builder.

- `records`: the input model (`DnsConfig`, `Service`, `ServicePort`, `Endpoint`), its
  JSON file (`DnsConfig.dump` writes it atomically, `DnsConfig.load` reads and
  validates it), and `build_records(config).lookup(name, type)`: the Kubernetes
  DNS-Based Service Discovery spec 1.1.0 answers, NXDOMAIN vs NODATA as CoreDNS gives
  them, on both address families (A and AAAA, in-addr.arpa and ip6.arpa). Pure.
- `wire`: the DNS wire format the server needs (no dnspython: start-up time).
- `server`: `python -m labkit.dns.server --config F --listen IP [--listen IP6] [--port 53]
  [--workers N] [--pidfile F]` (a dual-stack DNS pod: both of its addresses);
  `server.command(...)` builds that argv,
  `server.reload(pid)` (SIGHUP) makes it re-read the config, SIGTERM stops it and its
  workers.

Kept import-free: importing the package must not cost the server's start-up anything.
"""
