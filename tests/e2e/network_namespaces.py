"""Two "hosts" on this machine: Linux network namespaces joined by a veth pair, plus a veth
from the test's own namespace to the first, through which the test reaches its HTTP API (or
one such host, with small TCP send buffers). Only
the addresses given here carry traffic, and everything is deleted on the way out, also when
the test fails. Needs root and iproute2."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SHARD_SUBNET = "10.231.{}"
API_SUBNET = "10.232.{}"
"""/24 networks, the last byte of their name chosen per test process."""


@dataclass(frozen=True, slots=True)
class TwoHosts:
    namespaces: tuple[str, str]
    shard_addresses: tuple[str, str]
    """Each host's address on the link between them."""
    api_address: str
    """Host 0's address on the link from the test's namespace."""

    def command(self, host: int, *, private_tmp: bool = False) -> tuple[str, ...]:
        """A command prefix that runs in host `host`'s namespace; with `private_tmp`, with
        a /tmp and /dev/shm of its own, so that nothing but TCP passes between the hosts."""
        prefix = ("ip", "netns", "exec", self.namespaces[host])
        if not private_tmp:
            return prefix
        return (*prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_TMP)


PRIVATE_TMP = """set -e
# Fresh /tmp and /dev/shm; the working directory (a checkout may live in /tmp) stays reachable.
work="$PWD"
keep="$(mktemp -d /run/sluice-keep.XXXXXX)"
mount --bind "$work" "$keep"
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mkdir -p "$work"
mount --move "$keep" "$work"
rmdir "$keep"
cd "$work"
exec "$0" "$@"
"""


def missing_tools() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@contextmanager
def two_hosts() -> Iterator[TwoHosts]:
    tag = os.getpid() % 200 + 20
    hosts = (f"sluice-host0-{tag}", f"sluice-host1-{tag}")
    link, api_link = f"slc{tag}", f"sla{tag}"
    shard_net, api_net = SHARD_SUBNET.format(tag), API_SUBNET.format(tag)
    first, second = f"{shard_net}.1", f"{shard_net}.2"
    api_host, api_peer = f"{api_net}.1", f"{api_net}.2"
    try:
        for host in hosts:
            _ip("netns", "add", host)
            _ip("-n", host, "link", "set", "lo", "up")
        _ip("link", "add", f"{link}a", "type", "veth", "peer", "name", f"{link}b")
        for host, end, address in ((hosts[0], "a", first), (hosts[1], "b", second)):
            _ip("link", "set", f"{link}{end}", "netns", host)
            _ip("-n", host, "addr", "add", f"{address}/24", "dev", f"{link}{end}")
            _ip("-n", host, "link", "set", f"{link}{end}", "up")
        _ip("link", "add", api_link, "type", "veth", "peer", "name", f"{api_link}b")
        _ip("link", "set", f"{api_link}b", "netns", hosts[0])
        _ip("addr", "add", f"{api_host}/24", "dev", api_link)
        _ip("link", "set", api_link, "up")
        _ip("-n", hosts[0], "addr", "add", f"{api_peer}/24", "dev", f"{api_link}b")
        _ip("-n", hosts[0], "link", "set", f"{api_link}b", "up")
        yield TwoHosts(hosts, (first, second), api_peer)
    finally:
        subprocess.run(["ip", "link", "del", api_link], capture_output=True)
        for host in hosts:  # deleting a namespace deletes the links inside it
            subprocess.run(["ip", "netns", "del", host], capture_output=True)


SMALL_HOST_SUBNET = "10.233.{}"


@dataclass(frozen=True, slots=True)
class OneHost:
    namespace: str
    address: str
    """The host's address on the link from the test's namespace."""
    link: str
    """That link's end in the test's namespace."""

    def command(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)

    @contextmanager
    def unplugged(self) -> Iterator[None]:
        """The link down, as a pulled cable: nothing passes, and neither end is told."""
        _ip("link", "set", self.link, "down")
        try:
            yield
        finally:
            _ip("link", "set", self.link, "up")


@contextmanager
def host_with_small_send_buffers(max_bytes: int) -> Iterator[OneHost]:
    """One "host" whose TCP send buffers stay at `max_bytes` (loopback's grow to megabytes,
    which would swallow a whole token stream), reached from the test's namespace by a veth."""
    tag = os.getpid() % 200 + 20
    host, link = f"sluice-small-{tag}", f"sls{tag}"
    net = SMALL_HOST_SUBNET.format(tag)
    try:
        _ip("netns", "add", host)
        _ip("-n", host, "link", "set", "lo", "up")
        sysctl = f"net.ipv4.tcp_wmem=4096 {max_bytes} {max_bytes}"
        subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", sysctl], check=True)
        _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}b")
        _ip("link", "set", f"{link}b", "netns", host)
        _ip("addr", "add", f"{net}.1/24", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", host, "addr", "add", f"{net}.2/24", "dev", f"{link}b")
        _ip("-n", host, "link", "set", f"{link}b", "up")
        yield OneHost(host, f"{net}.2", link)
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", host], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)
