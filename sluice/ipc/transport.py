"""ZeroMQ sockets and msgpack framing between the API process and the engine process.

The API process binds both sockets (it outlives the engine); the engine connects. Inputs flow
API -> engine on one PUSH/PULL pair, outputs engine -> API on the other."""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio

from sluice.ipc.messages import EngineInput, EngineOutput


@dataclass(frozen=True, slots=True)
class IpcAddresses:
    inputs: str
    outputs: str

    @classmethod
    def in_new_temp_dir(cls) -> "IpcAddresses":
        folder = Path(tempfile.mkdtemp(prefix="sluice-"))
        return cls(inputs=f"ipc://{folder}/inputs", outputs=f"ipc://{folder}/outputs")


class EngineChannel:
    """The engine's end: receives inputs, sends outputs (blocking sockets)."""

    def __init__(self, addresses: IpcAddresses) -> None:
        self._context = zmq.Context()
        self._inputs = self._context.socket(zmq.PULL)
        self._inputs.connect(addresses.inputs)
        self._outputs = self._context.socket(zmq.PUSH)
        self._outputs.connect(addresses.outputs)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(EngineInput)

    def receive(self, timeout_ms: int) -> list[EngineInput]:
        """Every input already queued; waits up to `timeout_ms` for the first one."""
        messages: list[EngineInput] = []
        if not self._inputs.poll(timeout_ms):
            return messages
        while True:
            try:
                frame = self._inputs.recv(zmq.NOBLOCK)
            except zmq.Again:
                return messages
            messages.append(self._decoder.decode(frame))

    def send(self, message: EngineOutput) -> None:
        self._outputs.send(self._encoder.encode(message))

    def close(self) -> None:
        self._context.destroy(linger=1000)


class FrontendChannel:
    """The API process's end: sends inputs, receives outputs (asyncio sockets)."""

    def __init__(self, addresses: IpcAddresses) -> None:
        self._context = zmq.asyncio.Context()
        self._inputs = self._context.socket(zmq.PUSH)
        self._inputs.bind(addresses.inputs)
        self._outputs = self._context.socket(zmq.PULL)
        self._outputs.bind(addresses.outputs)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(EngineOutput)

    async def send(self, message: EngineInput) -> None:
        await self._inputs.send(self._encoder.encode(message))

    async def receive(self) -> EngineOutput:
        return self._decoder.decode(await self._outputs.recv())

    def close(self) -> None:
        self._context.destroy(linger=0)
