"""Joins this process to the shards' torch.distributed group: gloo on CPU, NCCL on CUDA.

Gloo and NCCL pick the network interface for their connections from the host name, which on
many machines resolves to a loopback address, so a second host can never connect: the most
common multi-host hang. Unless `GLOO_SOCKET_IFNAME` / `NCCL_SOCKET_IFNAME` say otherwise, the
interface is the one this host's routing table uses to reach the master address."""

import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from sluice.distributed.parallel_context import ParallelContext, collective
from sluice.errors import ConfigError

logger = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 30
"""A collective that waits this long for a shard fails: the shard or its host is gone. Shards
run each step in lockstep, so a healthy one is never this late (TGI waits 120 s)."""
START_TIMEOUT_S = 30 * 60
"""How long the shards wait for each other while loading weights: a big model on a slow disk
loads for minutes, and the shards finish at different times."""
SOCKET_INTERFACE_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True, slots=True)
class MasterAddress:
    """Where shard 0 listens for the others to join (TGI's --master-addr/--master-port)."""

    host: str
    port: int
    from_torchrun: bool = False
    """torchrun set up the meeting point (MASTER_ADDR, MASTER_PORT in the environment), and
    its agent may already hold the store there: join it as torchrun's workers do."""


@dataclass(frozen=True, slots=True)
class ShardGroups:
    """What a shard talks to the others through once it has joined."""

    parallel: ParallelContext
    """The model's collectives (NCCL on CUDA, gloo on CPU), failing after
    `COLLECTIVE_TIMEOUT_S`."""
    plans: dist.ProcessGroup
    """A gloo group for messages that live on the CPU (the step plans), with the same
    timeout, whatever backend the model's tensors use."""


def join_shard_group(
    rank: int, world_size: int, master: MasterAddress, device: torch.device
) -> ShardGroups:
    """Connect to the other shards; returns once all `world_size` have joined (waiting up to
    `START_TIMEOUT_S`, since the hosts of a multi-host server start by hand)."""
    _choose_socket_interface(master.host)
    try:
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo",
            init_method="env://"
            if master.from_torchrun
            else f"tcp://{_url_host(master.host)}:{master.port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=START_TIMEOUT_S),
        )
    except dist.DistNetworkError as error:
        raise ConfigError(
            f"shard {rank} cannot meet the others at {master.host}:{master.port} ({error}); "
            "if another server uses that port, pass another `--master-port`"
        ) from None
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    model_group = dist.new_group(
        backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout
    )
    plans = dist.new_group(backend="gloo", timeout=timeout)
    return ShardGroups(ParallelContext(rank, world_size, model_group), plans)


def wait_for_all_shards() -> None:
    """Block until every shard gets here: start-up steps that take each shard its own time
    (loading weights) end with this, under the long start-up timeout."""
    with collective("a shard did not finish starting"):
        dist.barrier()


def min_over_shards(value: int) -> int:
    """The smallest of every shard's `value` (e.g. how many KV blocks each can hold)."""
    tensor = torch.tensor([value], dtype=torch.int64)
    with collective("cannot agree with the other shards"):
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def leave_shard_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def interface_reaching(host: str) -> str | None:
    """The name of the network interface that this host's routes use to reach `host`, or
    None when no interface holds the address they would send from."""
    try:
        address = socket.getaddrinfo(host, None, family=socket.AF_INET)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))  # a UDP connect only picks the route; nothing is sent
            local_address = probe.getsockname()[0]
    except OSError:
        return None
    for _, name in socket.if_nameindex():
        if _ipv4_address(name) == local_address:
            return name
    return None


def _choose_socket_interface(master_host: str) -> None:
    unset = [v for v in SOCKET_INTERFACE_VARIABLES if v not in os.environ]
    if not unset:
        return
    interface = interface_reaching(master_host)
    if interface is None:
        logger.warning(
            "no network interface reaches %s; the collectives pick their own", master_host
        )
        return
    for variable in unset:
        os.environ[variable] = interface
    logger.info("collectives use interface %s, which reaches %s", interface, master_host)


def _ipv4_address(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError:  # no IPv4 address on this interface
            return None
    return socket.inet_ntoa(answer[20:24])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
