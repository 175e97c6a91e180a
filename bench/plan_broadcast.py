#!/usr/bin/env python3
"""How long rank 0 takes to hand a step's plan to another shard: over a torch.distributed gloo
group (what sluice uses) against ZeroMQ PUB/SUB over TCP loopback (what vLLM uses), for a plan
of 64 running decodes (block-table diffs, the common step) and 64 new requests (in full, with
150-token prompts). Each message is acknowledged over the same transport before the next, so
the figure is a round trip; an empty message gives the transport's own floor. Encoding and
decoding (msgspec) are timed apart.

Usage: .venv/bin/python bench/plan_broadcast.py [--rounds 500]
Writes bench/results/plan_broadcast_<cpu>.md. Nothing else heavy may run meanwhile."""

import argparse
import multiprocessing
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

import msgspec
import torch
import torch.distributed as dist
import zmq

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.shards import free_port
from sluice.engine.plan_broadcast import PlanBroadcast, PlanDecoder, PlanEncoder, WirePlan
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
NUM_REQUESTS = 64
PROMPT_TOKENS = 150


def plans() -> dict[str, bytes]:
    """The encoded messages: 64 new requests, then the same 64 decoding a token each."""
    params = SamplingParams(max_new_tokens=128)
    ids = [uuid.uuid4().hex for _ in range(NUM_REQUESTS)]
    blocks = [tuple(range(i * 20, i * 20 + 10)) for i in range(NUM_REQUESTS)]
    new = StepPlan(
        tuple(
            ScheduledRequest(rid, tuple(range(PROMPT_TOKENS)), 0, PROMPT_TOKENS, table, params)
            for rid, table in zip(ids, blocks, strict=True)
        )
    )
    decodes = StepPlan(
        tuple(
            ScheduledRequest(rid, (7,), PROMPT_TOKENS, PROMPT_TOKENS, (*table, i * 20 + 10), params)
            for i, (rid, table) in enumerate(zip(ids, blocks, strict=True))
        )
    )
    encoder = PlanEncoder()
    wire = msgspec.msgpack.Encoder()
    return {
        "empty": wire.encode(WirePlan()),
        "64 new requests": wire.encode(encoder.encode(new)),
        "64 decodes": wire.encode(encoder.encode(decodes)),
    }


def codec_us(rounds: int) -> dict[str, float]:
    """Median microseconds to encode (rank 0) and decode (a shard) the decode plan."""
    params = SamplingParams(max_new_tokens=128)
    plan = StepPlan(
        tuple(
            ScheduledRequest(str(i), (7,), 150, 150, tuple(range(11)), params)
            for i in range(NUM_REQUESTS)
        )
    )
    encoder, decoder = PlanEncoder(), PlanDecoder()
    wire_encoder, wire_decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(WirePlan)
    decoder.decode(encoder.encode(plan))
    encode, decode = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        payload = wire_encoder.encode(encoder.encode(plan))
        encode.append(time.perf_counter() - started)
        started = time.perf_counter()
        decoder.decode(wire_decoder.decode(payload))
        decode.append(time.perf_counter() - started)
    return {"encode": statistics.median(encode) * 1e6, "decode": statistics.median(decode) * 1e6}


def gloo_side(rank: int, port: int, messages: dict[str, bytes], rounds: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=60),
    )
    broadcast = PlanBroadcast(dist.new_group(backend="gloo"))
    decoder = msgspec.msgpack.Decoder(WirePlan)
    ack = torch.zeros(1, dtype=torch.uint8)
    results = {}
    for name, payload in messages.items():
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            if rank == 0:
                broadcast.send(decoder.decode(payload))
            else:
                broadcast.receive()
            dist.broadcast(ack, src=1, group=broadcast.group)
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times) * 1e6
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def zmq_side(rank: int, port: int, messages: dict[str, bytes], rounds: int, out) -> None:
    context = zmq.Context()
    if rank == 0:
        plans_socket, acks = context.socket(zmq.PUB), context.socket(zmq.PULL)
        plans_socket.bind(f"tcp://127.0.0.1:{port}")
        acks.bind(f"tcp://127.0.0.1:{port + 1}")
        acks.recv()  # the subscriber is connected
        results = {}
        for name, payload in messages.items():
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                plans_socket.send(payload)
                acks.recv()
                times.append(time.perf_counter() - started)
            results[name] = statistics.median(times) * 1e6
        out.put(results)
    else:
        plans_socket, acks = context.socket(zmq.SUB), context.socket(zmq.PUSH)
        plans_socket.setsockopt(zmq.SUBSCRIBE, b"")
        plans_socket.connect(f"tcp://127.0.0.1:{port}")
        acks.connect(f"tcp://127.0.0.1:{port + 1}")
        time.sleep(0.5)  # PUB drops messages until the subscription has arrived
        acks.send(b"ready")
        decoder = msgspec.msgpack.Decoder(WirePlan)
        for _ in range(len(messages) * rounds):
            decoder.decode(plans_socket.recv())
            acks.send(b"")
    context.destroy(linger=0)


def run_pair(target, messages: dict[str, bytes], rounds: int) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    out = spawn.SimpleQueue()
    port = free_port()
    processes = [
        spawn.Process(target=target, args=(rank, port, messages, rounds, out)) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    results = out.get()
    for process in processes:
        process.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    messages = plans()
    gloo = run_pair(gloo_side, messages, args.rounds)
    zeromq = run_pair(zmq_side, messages, args.rounds)
    codec = codec_us(args.rounds)
    lines = [
        "# Handing a step's plan to another shard: gloo broadcast against ZeroMQ PUB/SUB",
        "",
        f"Commit {git_commit()}, {cpu_description()}; two processes on this host, TCP over "
        f"loopback, median of {args.rounds} round trips (the plan, then a one-byte "
        "acknowledgement over the same transport).",
        "",
        "| message | bytes | gloo broadcast (sluice), us | ZeroMQ PUB/SUB, us |",
        "|---|---|---|---|",
        *(
            f"| {name} | {len(payload)} | {gloo[name]:.0f} | {zeromq[name]:.0f} |"
            for name, payload in messages.items()
        ),
        "",
        f"Encoding the 64-decode plan (block-table diffs, msgpack) takes {codec['encode']:.0f} us "
        f"on rank 0 and rebuilding it {codec['decode']:.0f} us on a shard.",
        "",
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"plan_broadcast_{cpu_kind()}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
