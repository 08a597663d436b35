"""The benchmark's ``destinations`` section: ``backup --dest s3://... --stream`` against a
real S3 HTTP API on loopback (moto's server, in this process) vs the same backup to a
local archive, measured in the same run (issue 6: wall <= 1.2x, peak RSS <= 200 MiB).

The upload is verified (read back and hashed) before it is copied under its final name:
that read-back is part of the measured wall time.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

BUCKET = "bench"


def section_destinations(c: Any, tools: SimpleNamespace, backup: Any) -> None:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as error:  # moto is a test dependency
        tools.say(f"SKIP destinations: {error}")
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1"
        )
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        dest = ["--dest", f"s3://{BUCKET}/{{TMP}}", "--endpoint-url", endpoint]
        stream, _ = c.run(
            "destinations", "stream_s3", [*c.backup_command(c.db), *dest, "--stream"], ours=True
        )
        upload, _ = c.run("destinations", "upload_s3", [*c.backup_command(c.db), *dest], ours=True)
        for stats in (stream, upload):
            if stats is not None and backup is not None:
                tools.check(f"RATIO {stats.tool}/backup wall", stats.wall / backup.wall, 1.20)
            if stats is not None:
                tools.check(f"RSS {stats.tool}", stats.rss, 200, "{:.1f} MiB", "{:g}")
    finally:
        server.stop()
