"""The `labkit` command: the verbs of DESIGN.md section 4, each a thin call into labkit.lab."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from labkit.errors import InputError, LabkitError


class _RuntimeNames(Sequence[str]):
    """The runtime registry's names, looked up only when `--runtime` is given or help is shown: the
    plan layer's copy (labkit.topology.schema.RUNTIMES, which a test holds equal to the registry), so
    `validate` loads no runtime code and the verbs that need no topology do not load the plan."""

    def _names(self) -> tuple[str, ...]:
        from labkit.topology.schema import RUNTIMES

        return RUNTIMES

    def __getitem__(self, index):  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description="Kubernetes cluster networks in network namespaces")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    up = sub.add_parser("up", help="build a lab from a topology file")
    up.add_argument("topology")
    up.add_argument("--runtime", choices=_RuntimeNames())
    up.add_argument("--name", help="run the topology under another lab name (side by side with itself)")
    up.add_argument("--reconfigure", action="store_true", help="take the lab down first if it is up")
    up.add_argument("--stand-in", action="store_true",
                    help="containers whose image the Docker engine lacks run labkit's stand-in "
                         "(as cluster.stand-ins: true)")
    up.add_argument("--quiet", "-q", action="store_true")

    apply = sub.add_parser("apply", help="bring a running lab's workloads in line with its file (pods, services, "
                                         "DNS, policies)")
    apply.add_argument("topology")
    apply.add_argument("--name", help="the running lab's name, if it was brought up with --name")
    apply.add_argument("--quiet", "-q", action="store_true")

    down = sub.add_parser("down", help="remove everything a lab made")
    down.add_argument("topology", nargs="?")
    down.add_argument("--name", help="the lab's name (works without the topology file)")
    down.add_argument("--all", action="store_true", help="every labkit lab on this machine")

    status = sub.add_parser("status", help="nodes, addresses, pods and services of running labs")
    status.add_argument("topology", nargs="?")
    status.add_argument("--name")
    status.add_argument("--format", choices=["table", "json"], default="table")

    ex = sub.add_parser("exec", help="run a command in a node (NODE) or pod (NS/POD)")
    ex.add_argument("lab")
    ex.add_argument("target")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    ver = sub.add_parser("verify", help="check the topology's expect: against the running lab; exit 0 all met, "
                                        "1 some not met, 2 the lab is not up or the expectations are invalid")
    ver.add_argument("topology", nargs="?", help="whose expect: to check (default: each lab's own topology file)")
    ver.add_argument("--name", action="append", metavar="LAB",
                     help="a running lab (its name, or a glob such as 'ws-*'); give it several times for a "
                          "table of labs")
    ver.add_argument("--all", action="store_true", help="every lab that is up, each against its own topology")
    ver.add_argument("--format", choices=["table", "json", "junit"], default="table")
    ver.add_argument("--timeout", type=_seconds, default=1.0, help="seconds per probe (0 < T <= 3600)")
    ver.add_argument("--retry", type=_rounds, default=0, help="probe a missed check again, up to N more rounds")
    ver.add_argument("-o", "--output", help="write the report to this file instead of stdout")

    graph = sub.add_parser("graph", help="a picture of a lab: nodes, links, pods, services (no root needed)")
    graph.add_argument("topology", nargs="?")
    graph.add_argument("--name", help="a running lab's name (its pods and services are drawn too)")
    graph.add_argument("--format", choices=["mermaid", "dot", "html"], help="default: from -o's suffix, else mermaid")
    graph.add_argument("-o", "--output", help="write to this file instead of stdout")

    tr = sub.add_parser("trace", help="send one probe and show its path hop by hop: routes, and every "
                                      "nftables rule that acted (service, endpoint, NetworkPolicy, masquerade)")
    tr.add_argument("lab")
    tr.add_argument("source", metavar="SRC", help="a node or NS/POD")
    tr.add_argument("destination", metavar="DST[:PORT]",
                    help="NS/POD, a node, a Service (web, web.ns, web.ns.svc.cluster.local) or an IP address "
                         "(IPv6 with a port in brackets: [fd00::1]:80)")
    tr.add_argument("--protocol", choices=["tcp", "udp", "icmp"], help="default: the Service port's, else tcp")
    tr.add_argument("--family", type=int, choices=[4, 6],
                    help="the address family where DST has both (a dual-stack pod, node or Service); "
                         "default: its primary address")
    tr.add_argument("--format", choices=["text", "json", "mermaid", "html"], default="text")
    tr.add_argument("-o", "--output", help="write to this file instead of stdout")
    tr.add_argument("--timeout", type=_seconds, default=1.0, help="seconds to wait for the answer (0 < T <= 30)")

    val = sub.add_parser("validate", help="check a topology file; needs no root")
    val.add_argument("topology")

    sub.add_parser("list", help="names of the labs that are up")

    cap = sub.add_parser("capture", help="tcpdump in a node (NODE) or pod (NS/POD), every interface or one "
                                         "(TARGET:IFACE); pcap to a file or stdout, until Ctrl-C or down",
                         usage="labkit capture LAB TARGET[:IFACE] [-w FILE] [-- FILTER ...]")
    cap.add_argument("lab")
    cap.add_argument("target", metavar="TARGET[:IFACE]")
    cap.add_argument("-w", "--write", metavar="FILE", help="write the pcap here (default: stdout, for a pipe)")
    cap.add_argument("filter", nargs="*", metavar="-- FILTER", help="a tcpdump filter after --, e.g. -- port 53")

    ev = sub.add_parser("events", help="interfaces up/down, addresses, routes and pods as they change, until "
                                       "Ctrl-C or down")
    ev.add_argument("lab")
    ev.add_argument("--format", choices=["text", "json"], default="text", help="json: one object per line")

    netem = sub.add_parser("netem", help="impair a link end live (delay, jitter, loss, rate, corrupt, duplicate, "
                                         "reorder), clear it, or show what is in force",
                           usage="labkit netem LAB NODE:IFACE [--delay 50ms] [--loss 1%%] [--rate 10mbit] ... | "
                                 "LAB NODE:IFACE --clear | show LAB [--format json]")
    netem.add_argument("words", nargs="+", metavar="LAB NODE:IFACE | show LAB")
    for key, example in (("delay", "50ms"), ("jitter", "5ms"), ("loss", "1%"), ("rate", "10mbit"),
                         ("corrupt", "0.1%"), ("duplicate", "1%"), ("reorder", "25%")):
        netem.add_argument(f"--{key}", help=f"e.g. {example}")
    netem.add_argument("--clear", action="store_true", help="remove every impairment of the interface")
    netem.add_argument("--format", choices=["table", "json"], default="table")

    image = sub.add_parser("image", help="labkit's Docker images (built locally; nothing is pulled)")
    image_sub = image.add_subparsers(dest="image_verb", required=True, metavar="ACTION")
    build = image_sub.add_parser("build", help="build labkit/node and labkit/pause from this machine's packages")
    build.add_argument("--force", action="store_true", help="rebuild even if present")

    cni = sub.add_parser("cni", help="the bundled CNI plugin for runtimes of your own (a lab sets up its own)")
    cni_sub = cni.add_subparsers(dest="cni_verb", required=True, metavar="ACTION")
    install = cni_sub.add_parser("install", help="write the labkit-cni launcher into a CNI bin dir")
    install.add_argument("bin_dir")
    install.add_argument("--socket", help="the CNI server it hands calls to (see: labkit cni serve)")
    serve = cni_sub.add_parser("serve", help="answer labkit-cni calls on a unix socket, in the foreground")
    serve.add_argument("--socket", required=True)
    return p


def _seconds(text: str) -> float:
    """A time limit: a finite number of seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time limit: give seconds, more than 0 and at most 3600")
    return value


def _check_names(args: argparse.Namespace) -> None:
    """Every lab name given on the command line is checked before anything uses it (as a path,
    a namespace prefix or a label)."""
    from labkit.paths import check_lab_name
    from labkit.topology.names import is_clab_lab_name, lab_key

    # a lab is named as its file names it (containerlab's rule), or by the name labkit runs it under
    if args.verb == "verify" and args.name:  # several names, or globs that verify matches to the labs that are up
        args.name = [n if set(n) & set("*?[") else check_lab_name(lab_key(n) if is_clab_lab_name(n) else n, "--name")
                     for n in args.name]
    elif getattr(args, "name", None) is not None:
        args.name = check_lab_name(lab_key(args.name) if is_clab_lab_name(args.name) else args.name, "--name")
    if args.verb in ("exec", "trace", "capture", "events"):
        args.lab = check_lab_name(lab_key(args.lab) if is_clab_lab_name(args.lab) else args.lab, "LAB")
    if args.verb == "netem":
        at = 1 if args.words[0] == "show" and len(args.words) == 2 else 0
        word = args.words[at]
        args.words[at] = check_lab_name(lab_key(word) if is_clab_lab_name(word) else word, "LAB")


def _rounds(text: str) -> int:
    """A number of further rounds: a whole number 0-100."""
    if not text.isdigit() or int(text) > 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rounds 0-100")
    return int(text)


def _verify(args: argparse.Namespace) -> int:
    from labkit import lab
    from labkit.verify import CannotCheck, Report, print_verify

    names = list(args.name or [])
    if args.all:
        names += sorted(lab.known_labs())
    several = args.all or len(names) > 1 or any(set(n) & set("*?[") for n in names)
    if not several and not args.topology and not names:
        raise InputError("name what to check: labkit verify TOPO, --name LAB (several times, or a glob) or --all")
    if several:
        report: Any = lab.verify_labs(names, args.topology, args.timeout, args.retry)
    else:
        try:
            if args.topology:
                report = lab.verify_topology(args.topology, name=names[0] if names else None, timeout=args.timeout,
                                             retry=args.retry)
            else:
                report = lab.verify_lab(names[0], timeout=args.timeout, retry=args.retry)
        except CannotCheck as exc:  # reported in the format asked for (a grader reads JUnit): exit code 2
            report = Report.cannot_check(names[0] if names else args.topology, str(exc), args.topology)
    if not args.output:
        return print_verify(report, args.format)
    with open(args.output, "w", encoding="utf-8") as fh:
        code = print_verify(report, args.format, file=fh)
    print(f"wrote {args.output}")
    return code


def _lab_name(args: argparse.Namespace) -> str | None:
    if getattr(args, "name", None):
        return args.name
    if getattr(args, "topology", None):
        from labkit.topology import load_topology
        from labkit.topology.names import lab_key

        return lab_key(load_topology(args.topology)[0].name)
    return None


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabkitError("this command builds network namespaces and needs root: run it with sudo")


def _enter_rootless(args: argparse.Namespace) -> bool:
    """An ordinary user's lab verbs run inside the user's own namespaces (labkit.rootless); True if entered."""
    from labkit import rootless

    lab_verb = args.verb in ("up", "apply", "down", "status", "exec", "verify", "trace", "list",
                             "capture", "events", "netem") or (
        args.verb == "graph" and args.name)
    if not rootless.needed() or not lab_verb:
        if args.verb == "image" and rootless.needed():
            raise LabkitError("the docker runtime needs root (its engine is root's): labkit image build as root; "
                              "labs without root use the netns runtime")
        return False
    if getattr(args, "runtime", None) == "docker":
        raise LabkitError("the docker runtime needs root (its engine is root's): run it as root, or leave out "
                          "--runtime docker for a lab without root (netns runtime)")
    rootless.enter()
    return True


def run(argv: Sequence[str]) -> int:
    argv, after = list(argv), None
    if argv[:1] == ["capture"] and "--" in argv:  # the filter's words never pass through option parsing
        after = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = _parser().parse_args(argv)
    if after is not None:
        args.filter = [*args.filter, *after]
    _check_names(args)
    if not _enter_rootless(args):
        return _run(args)
    from labkit.rootless import stop_holder_if_idle

    try:
        return _run(args)
    finally:  # the user's namespaces go when no lab is left in them (a status of no lab leaves none)
        stop_holder_if_idle()


def _run(args: argparse.Namespace) -> int:
    if args.verb == "validate":  # the plan layer only: nothing that builds is imported
        from labkit.topology import load_plan

        plan = load_plan(args.topology)
        named = f"lab {plan.title}" + (f" (runs as {plan.lab})" if plan.title and plan.title != plan.lab else "")
        links = len(plan.links) + len(plan.external_links)
        print(f"{args.topology}: ok — {named}: {len(plan.nodes)} nodes, {links} links")
        from labkit.topology.workloads import plan_notes

        for note in [*plan.notes, *plan_notes(plan)]:
            print(f"note: {note}")
        if plan.cluster is not None and plan.workloads is not None:
            from labkit.k8s.standin import stand_ins

            for pod, container, stand_in in stand_ins(plan.workloads.pods, plan.runtime, plan.cluster.stand_ins):
                print(f"stand-in: {pod.key} container {container}: {stand_in.reason}")
        return 0
    from labkit import lab

    if args.verb == "graph":
        from labkit.graph import choose_format, render_graph

        return _emit(render_graph(lab.graph_summary(args.topology, name=args.name),
                                  choose_format(args.format, args.output)), args.output)
    if args.verb == "list":
        for name in sorted(lab.known_labs(containers=True)):
            print(name)
        return 0
    if args.verb == "status":
        labs = lab.status(_lab_name(args))
        if args.format == "json":
            print(json.dumps(labs[0] if (args.name or args.topology) else labs, indent=2))
        else:
            from labkit.report import print_status

            print_status(labs)
        return 0
    if args.verb == "image":
        from labkit.runtime.image import build_images

        built = build_images(force=args.force)
        print("built: " + ", ".join(built) if built else "images already present (--force rebuilds)")
        return 0
    if args.verb == "cni" and args.cni_verb == "install":
        from labkit.cni.install import install_launcher

        print(f"wrote {install_launcher(args.bin_dir, socket=os.path.abspath(args.socket) if args.socket else None)}")
        return 0
    _need_root()
    if args.verb == "cni":  # serve: each call runs as this process, in its caller's namespace
        from labkit.cni.server import serve

        serve(os.path.abspath(args.socket))
        return 0
    if args.verb == "up":
        from labkit.progress import Progress

        if args.reconfigure:
            lab.down(_lab_name(args))
        summary = lab.up(args.topology, args.runtime, Progress(quiet=args.quiet), name=args.name,
                         stand_in=args.stand_in)
        if not args.quiet:  # what was built, as containerlab shows it after a deploy
            from labkit.report import print_status

            print_status(lab.status(summary["name"]))
        return 0
    if args.verb == "apply":
        from labkit.progress import Progress

        lab.apply(args.topology, args.name, Progress(quiet=args.quiet))
        return 0
    if args.verb == "down":
        if args.all:
            for name in sorted(lab.known_labs(containers=True)):
                lab.down(name)
                print(f"lab {name}: removed")
            return 0
        name = _lab_name(args)
        if name is None:
            raise LabkitError("name the lab: labkit down TOPOLOGY, --name LAB or --all")
        existed = lab.down(name)
        print(f"lab {name}: {'removed' if existed else 'was not up; nothing to remove'}")
        return 0
    if args.verb == "verify":
        return _verify(args)
    if args.verb == "netem":
        return _netem(lab, args)
    if args.verb == "events":
        return _events(lab, args)
    if args.verb == "capture":
        words = list(args.filter)
        if args.write is None and sys.stdout.isatty():
            raise LabkitError("the capture is pcap, not text: write it to a file (-w FILE) or pipe it "
                              "(| wireshark -k -i -, | tcpdump -r -)")
        return lab.capture(args.lab, args.target, args.write, words)
    if args.verb == "trace":
        report = lab.trace(args.lab, args.source, args.destination, args.protocol, args.timeout, args.family)
        return _emit(lab.render_trace(report, args.format), args.output)
    if args.verb == "exec":
        command = list(args.argv)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise LabkitError("no command given: labkit exec LAB TARGET -- CMD ...")
        return lab.exec_in(args.lab, args.target, command)
    raise AssertionError(args.verb)


def _events(lab, args: argparse.Namespace) -> int:  # noqa: ANN001 - labkit.lab, imported late
    import signal

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))

    def emit(event) -> None:  # noqa: ANN001
        print(json.dumps(event.as_dict()) if args.format == "json" else event.text(), flush=True)

    def ready(names: list[str]) -> None:
        print(f"watching lab {args.lab}: {len(names)} namespaces (nodes and pods); Ctrl-C stops", file=sys.stderr,
              flush=True)

    try:
        lab.events(args.lab, emit, lambda: bool(stop), ready)
    except KeyboardInterrupt:
        pass
    return 0


NETEM_KEYS = ("delay", "jitter", "loss", "rate", "corrupt", "duplicate", "reorder")


def _netem(lab, args: argparse.Namespace) -> int:  # noqa: ANN001 - labkit.lab, imported late
    values = {key: getattr(args, key) for key in NETEM_KEYS if getattr(args, key) is not None}
    if args.words[0] == "show" and len(args.words) == 2:
        if values or args.clear:
            raise LabkitError("netem show takes no impairment options")
        found = lab.netem_show(args.words[1])
    elif len(args.words) == 2:
        if args.clear and values:
            raise LabkitError("--clear removes every impairment; give it alone")
        if not args.clear and not values:
            raise LabkitError("give impairments (--delay, --jitter, --loss, --rate, --corrupt, --duplicate, "
                              "--reorder) or --clear")
        found = lab.netem(args.words[0], args.words[1], None if args.clear else values)
        target, _, ifname = args.words[1].rpartition(":")
        found = [f for f in found if (f["node"], f["interface"]) == (target, ifname)]
        if not found and args.format == "table":
            print(f"{args.words[1]}: no impairments in force")
            return 0
    else:
        raise LabkitError("usage: labkit netem LAB NODE:IFACE [--delay 50ms --loss 1% ...] | "
                          "LAB NODE:IFACE --clear | show LAB")
    if args.format == "json":
        print(json.dumps(found, indent=2))
        return 0
    from labkit.report import print_impairments

    print_impairments(found)
    return 0


def _emit(text: str, output: str | None) -> int:
    """A rendered picture or report: to the file `-o` names, or to stdout."""
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so in one line; the traceback on request
        if os.environ.get("LABKIT_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); this is a labkit bug: please report it, "
              "with the traceback LABKIT_DEBUG=1 shows", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
