"""invoke tasks: the `lab` collection (same verbs as the `labkit` command) and dev tasks.

Both this file and labkit/cli.py call labkit.lab; neither holds logic of its own.
"""

from __future__ import annotations

import os
import shlex
import sys

from invoke import Collection, task

DEFAULT_TOPOLOGY = "topologies/routed-triangle.yaml"


def _labkit(c, *args: str, pty: bool = True, warn: bool = False):
    return c.run(shlex.join([sys.executable, "-m", "labkit.cli", *args]), pty=pty and sys.stdout.isatty(),
                 warn=warn)


@task(help={"topo": "topology file", "runtime": "a runtime of labkit.runtime's registry (labkit up --help lists them)",
            "name": "run under another lab name",
            "stand_in": "containers whose image the Docker engine lacks run labkit's stand-in"})
def up(c, topo=DEFAULT_TOPOLOGY, runtime=None, name=None, reconfigure=False, stand_in=False):
    """Build a lab from a topology file."""
    args = ["up", topo] + (["--runtime", runtime] if runtime else []) + (["--name", name] if name else [])
    _labkit(c, *args, *(["--reconfigure"] if reconfigure else []), *(["--stand-in"] if stand_in else []))


@task(help={"topo": "topology file", "name": "the running lab's name, if not the file's"})
def apply(c, topo=DEFAULT_TOPOLOGY, name=None):
    """Bring a running lab's workloads in line with its file: pods, services, DNS, policies."""
    _labkit(c, "apply", topo, *(["--name", name] if name else []))


@task(help={"topo": "topology file", "name": "lab name", "all": "every lab"})
def down(c, topo=None, name=None, all=False):
    """Remove everything a lab made."""
    args = ["down"] + ([topo] if topo else []) + (["--name", name] if name else []) + (["--all"] if all else [])
    if not (topo or name or all):
        args.append(DEFAULT_TOPOLOGY)
    _labkit(c, *args)


@task(help={"name": "lab name (all labs when omitted)", "format": "table or json"})
def status(c, name=None, format="table"):
    """Nodes, addresses, pods and services of running labs."""
    _labkit(c, "status", *(["--name", name] if name else []), "--format", format)


@task(name="exec", help={"lab": "lab name", "target": "NODE or NS/POD", "cmd": "the command"})
def exec_(c, lab, target, cmd):
    """Run a command in a node or pod; its exit code passes through."""
    result = _labkit(c, "exec", lab, target, "--", *shlex.split(cmd), warn=True)
    sys.exit(result.exited)


@task(iterable=["name"],
      help={"topo": "topology file (default: each lab's own, when --name or --all is given)",
            "name": "a running lab or a glob (ws-*); several times for a table of labs",
            "all": "every lab that is up", "format": "table, json or junit",
            "retry": "probe a missed check again, up to N more rounds", "output": "write the report to this file"})
def verify(c, topo=None, name=None, all=False, format="table", retry=0, output=None):
    """Check expect: against running labs; exit 0 all met, 1 some not met, 2 not up or invalid."""
    if not topo and not name and not all:
        topo = "topologies/netpol-demo.yaml"
    argv = [*([topo] if topo else []), *(a for n in name or [] for a in ("--name", n)), *(["--all"] if all else []),
            "--format", format, "--retry", str(retry), *(["-o", output] if output else [])]
    result = _labkit(c, "verify", *argv, warn=True)
    sys.exit(result.exited)


@task(help={"topo": "topology file", "name": "a running lab (draws its pods and services)",
            "format": "mermaid, dot or html", "output": "file to write"})
def graph(c, topo=DEFAULT_TOPOLOGY, name=None, format=None, output=None):
    """A picture of a lab: mermaid, Graphviz dot, or one self-contained HTML page."""
    _labkit(c, "graph", topo, *(["--name", name] if name else []), *(["--format", format] if format else []),
            *(["-o", output] if output else []))


@task(help={"lab": "lab name", "src": "a node or NS/POD", "dst": "DST[:PORT]: NS/POD, node, Service or address",
            "protocol": "tcp, udp or icmp", "format": "text, json, mermaid or html", "output": "file to write",
            "family": "4 or 6: the address family where the destination has both"})
def trace(c, lab, src, dst, protocol=None, format="text", output=None, family=None):
    """Send one probe and show its path hop by hop: routes and the nftables rules that acted."""
    _labkit(c, "trace", lab, src, dst, *(["--protocol", protocol] if protocol else []), "--format", format,
            *(["-o", output] if output else []), *(["--family", str(family)] if family else []))


@task(help={"lab": "lab name", "target": "NODE or NS/POD, optionally :IFACE (default: every interface)",
            "write": "pcap file (default: stdout, for a pipe)", "filter": "tcpdump filter, e.g. 'port 53'"})
def capture(c, lab, target, write=None, filter=None):
    """tcpdump in a node or pod until Ctrl-C or down: pcap to a file or stdout."""
    _labkit(c, "capture", lab, target, *(["-w", write] if write else []),
            *(["--", *shlex.split(filter)] if filter else []), pty=False)


@task(help={"lab": "lab name ('show' lists every impairment)", "where": "NODE:IFACE", "delay": "e.g. 50ms",
            "jitter": "e.g. 5ms", "loss": "e.g. 1%", "rate": "e.g. 10mbit", "corrupt": "e.g. 0.1%",
            "duplicate": "e.g. 1%", "reorder": "e.g. 25%", "clear": "remove every impairment of the interface"})
def netem(c, lab, where=None, delay=None, jitter=None, loss=None, rate=None, corrupt=None, duplicate=None,
          reorder=None, clear=False):
    """Impair a link end live, clear it (--clear), or list what is in force (--lab show --where LAB)."""
    values = {"delay": delay, "jitter": jitter, "loss": loss, "rate": rate, "corrupt": corrupt,
              "duplicate": duplicate, "reorder": reorder}
    options = [arg for key, value in values.items() if value is not None for arg in (f"--{key}", str(value))]
    result = _labkit(c, "netem", lab, *([where] if where else []), *options, *(["--clear"] if clear else []),
                     warn=True)
    sys.exit(result.exited)


@task(help={"lab": "lab name", "format": "text or json (one object per line)"})
def events(c, lab, format="text"):
    """Interfaces, addresses, routes and pods of a lab as they change, until Ctrl-C or down."""
    _labkit(c, "events", lab, "--format", format, pty=False)


@task(help={"topo": "topology file"})
def validate(c, topo=DEFAULT_TOPOLOGY):
    """Check a topology file (needs no root)."""
    _labkit(c, "validate", topo)


@task(name="list")
def list_(c):
    """Names of the labs that are up."""
    _labkit(c, "list")


@task(help={"k": "only tests matching this expression"})
def test(c, k=None):
    """The whole test suite (integration tests need root)."""
    c.run(shlex.join([sys.executable, "-m", "pytest", "-q", *(["-k", k] if k else [])]), pty=sys.stdout.isatty())


BENCHES = ("lab", "cni", "pods", "dns", "runtimes", "trace", "bgp", "capture", "standin", "up", "rootless", "lb",
           "ingress")


@task(help={"only": f"comma-separated subset of {','.join(BENCHES)}", "sizes": "chain sizes for the lab bench",
            "repeat": "runs per size (best is kept)", "attendees": "users for the rootless bench (each one lab)"})
def bench(c, only="lab,cni,pods,dns,runtimes,trace,bgp,capture,standin,up,rootless,lb,ingress",
          sizes="10,100,1000", repeat=3, attendees=30):
    """Benchmarks against baselines measured in the same run; prints tables, writes nothing."""
    chosen = [b.strip() for b in only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; valid: {', '.join(BENCHES)}")
    if "lab" in chosen:
        from tests.bench.bench_lab import print_lab_bench

        print_lab_bench([int(s) for s in sizes.split(",")], int(repeat))
    if "cni" in chosen:
        from tests.bench.bench_cni import bench_cni_exec

        _print_rows("CNI ADD+DEL as an executable, 200 pods (ms)", bench_cni_exec(200))
    if "pods" in chosen:
        from tests.bench.bench_pods import print_pods_bench

        print_pods_bench(300)
    if "dns" in chosen:
        from tests.bench.bench_dns import bench_dns, table_rows

        _print_rows("DNS queries/s under dnsperf: the DNS pod as a lab deploys it, and dnsmasq",
                    table_rows(bench_dns(10)))
    if "runtimes" in chosen:
        from tests.bench.bench_runtimes import print_runtime_bench

        print_runtime_bench(50)
    if "trace" in chosen:
        from tests.bench.bench_trace import bench_trace

        _print_rows("labkit trace end to end, a cross-node Service request on kube-3node (ms)", bench_trace(5))
    if "bgp" in chosen:
        from tests.bench.bench_bgp import print_bgp_bench

        print_bgp_bench(6)
    if "capture" in chosen:
        from tests.bench.bench_capture import bench_capture

        _print_rows("What a running capture costs a pod's throughput (iperf3, pod to pod across nodes)",
                    bench_capture())
    if "standin" in chosen:
        from tests.bench.bench_standin import print_standin_bench

        print_standin_bench(50)
    if "up" in chosen:
        from tests.bench.bench_up import print_up_bench

        print_up_bench(int(repeat))
    if "rootless" in chosen:
        from tests.bench.bench_rootless import print_rootless_bench

        print_rootless_bench(int(attendees))
    if "lb" in chosen:
        from tests.bench.bench_lb import print_lb_bench

        print_lb_bench(6)
    if "ingress" in chosen:
        from tests.bench.bench_ingress import bench_ingress

        found = bench_ingress()
        _print_rows("HTTP from outside on kube-edge: through a NodePort and HAProxy vs straight to the pod",
                    found["http"])
        _print_rows("apply of a changed HTTPRoute: until apply returns, until the proxy serves it (ms)",
                    found["apply"])


def _print_rows(title: str, rows: dict) -> None:
    """A table from {row: {column: value}} (nested dicts of numbers, as the bench modules return)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    first = next(v for v in rows.values() if isinstance(v, dict))
    columns = [k for k, v in first.items() if not isinstance(v, dict)]
    table.add_column("")
    for column in columns:
        table.add_column(column, justify="right")
    for name, values in rows.items():
        if isinstance(values, dict):
            table.add_row(name, *(f"{values.get(c, ''):.2f}" if isinstance(values.get(c), float)
                                  else str(values.get(c, "")) for c in columns))
    console = Console(width=max(Console().width, 132))  # piped output too: tables are wide
    console.print(table)
    notes = ", ".join(f"{k}: {v}" for k, v in rows.items() if not isinstance(v, dict))
    if notes:
        console.print(notes)


@task(help={"force": "rebuild even if present"})
def image(c, force=False):
    """Build labkit's Docker images (labkit/node, labkit/pause) from this machine's packages."""
    _labkit(c, "image", "build", *(["--force"] if force else []))


@task
def lint(c):
    """ruff over the code and tests; lint-imports: the layers of DESIGN.md section 2 (pyproject.toml)."""
    c.run(f"{sys.executable} -m ruff check labkit tests tasks.py")
    c.run(shlex.join([os.path.join(os.path.dirname(sys.executable), "lint-imports"), "--no-logo"]))


lab = Collection("lab", up, apply, down, status, exec_, verify, graph, trace, validate, list_, capture, netem,
                 events)
ns = Collection(lab, test, bench, image, lint)
