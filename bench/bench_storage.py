"""The benchmark's ``destinations`` section: ``backup --dest s3://... --stream`` against a
real S3 HTTP API on loopback (moto's server), and the same backup uploaded after it is
written, vs the same backup to a local archive, in interleaved rounds of the same run
(issue 15: --stream's wall <= 1.05x; issue 6: the upload's <= 1.2x, peak RSS <= 200 MiB).

moto runs as its own process: a child's peak RSS as wait4 reports it starts from the
parent's size at the fork, and moto keeps every object in memory. The upload is verified
(read back and hashed) before it is copied under its final name: that read-back is part
of the measured wall time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

BUCKET = "bench"


def section_destinations(c: Any, tools: SimpleNamespace) -> None:
    try:
        import boto3
    except ImportError as error:  # boto3 and moto are test dependencies
        tools.say(f"SKIP destinations: {error}")
        return
    # Its own process: a child's peak RSS (wait4) starts from this process's size at the
    # fork, and moto keeps every uploaded object in memory.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{port}'])",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1"
        )
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                time.sleep(0.1)
        dest = ["--dest", f"s3://{BUCKET}/{{TMP}}", "--endpoint-url", endpoint]
        # Interleaved rounds with a local backup in each: moto and the server slow down
        # as they fill, and a tool measured in one block would carry that into its ratio.
        commands = {
            "local": [*c.backup_command(c.db)],
            "stream_s3": [*c.backup_command(c.db), *dest, "--stream"],
            "upload_s3": [*c.backup_command(c.db), *dest],
        }

        def measure(tool: str) -> Callable[[], Any]:
            return lambda: c.run("destinations", tool, commands[tool], ours=True, repeat=1)[0]

        local, stream, upload = tools.interleaved(
            {tool: measure(tool) for tool in commands}, c.args.repeat
        )
        for stats in (stream, upload):
            if stats is not None and local is not None:
                # --stream: issue 15's target; a plain upload: the destinations issue's.
                target = 1.05 if stats.tool == "stream_s3" else 1.20
                tools.check(f"RATIO {stats.tool}/local wall", stats.wall / local.wall, target)
            if stats is not None:
                tools.check(f"RSS {stats.tool}", stats.rss, 200, "{:.1f} MiB", "{:g}")
    finally:
        server.terminate()
        server.wait()
