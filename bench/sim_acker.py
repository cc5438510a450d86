"""A controller stand-in for the simulator benchmark: acknowledges every birth, event and result.

Run in a process of its own (so it costs the measured process nothing) by
``bench/sim_capacity.py``: it subscribes to the sequenced channels of every locker under the
bench's topic root and answers each message with a signed ``ack``, using the keys the
simulator derives from the seed. With it, a fleet at steady state has nothing left to resend,
as with a real controller. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.spec import command_key_for
from protocol.auth import sign_ack
from protocol.codec import encode
from protocol.messages import Ack, SeqRange


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    keys: dict[str, bytes] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-acker-{args.seed}")

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        for channel in ("birth", "event", "result"):
            c.subscribe(f"{args.root}/locker/+/{channel}", qos=1)

    def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        locker_id = data["locker_id"]
        key = keys.get(locker_id)
        if key is None:
            key = keys[locker_id] = command_key_for(args.seed, locker_id)
        seq = SeqRange(data["seq"], data["seq"])
        ack = sign_ack(Ack(locker_id, data["boot_id"], (seq,), data["ts"]), key)
        c.publish(f"{args.root}/locker/{locker_id}/ack", encode(ack), qos=1)

    client.on_connect = on_connect
    client.on_message = on_message
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", args.port, keepalive=60)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
