"""Upload backlog: does the cost of committing one more segment grow with the segments a
partition already holds in the bucket?

    python -m loadtest.upload_backlog [--segments 3000] [--store s3|file] [--window 100]

Uploads --segments small sealed segments (about 20 KiB of records each, encrypted under a key
ring) into one partition the way the broker's upload loop does: a copy of the manifest per
upload, the segment streamed up, the manifest committed. After an object-store outage a
broker has thousands of such segments to catch up on, so the figure that matters is the
time per upload when the partition already holds many, as a ratio to the time when it holds
few (the first --window uploads), measured in the same run. Also printed: the manifest head's
size and the longest the event loop was held by one upload's manifest work (copy and
serialization run on the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from security.keys import LocalKeyProvider, generate_keyring
from tiering.records import build_control_batch
from tiering.remote.manifest import PartitionManifest
from tiering.remote.uploader import SegmentFiles, SegmentUploader, UploadSettings

from .replay import PREFIX, Store
from .stats import median, ratio

BATCHES = 300  # control batches of ~70 bytes: a segment of ~20 KiB


def _segment_file(path: Path) -> None:
    path.write_bytes(b"".join(build_control_batch(1, 0, True, 0, 1_700_000_000_000 + i, base_offset=i)
                              for i in range(BATCHES)))


async def _run(store: Store, segments: int, window: int, work: Path) -> dict[str, float]:
    generate_keyring(work / "ring.json")
    keys = LocalKeyProvider.from_file(work / "ring.json")
    log_path = work / "segment.log"
    _segment_file(log_path)
    s3 = store.open(prefix="")
    await s3.start()
    uploader = SegmentUploader(s3, keys, UploadSettings(prefix=PREFIX))
    manifest = PartitionManifest("backlog", uuid.uuid4(), 0)
    times: list[float] = []
    held: list[float] = []
    try:
        for i in range(segments):
            base = i * BATCHES
            files = SegmentFiles(base, base + BATCHES - 1, 1_700_000_000_000, base, log_path)
            started = time.perf_counter()
            work_copy = manifest.copy()  # as TierManager._upload_sealed: readers keep the committed view
            held.append(time.perf_counter() - started)
            await uploader.upload(work_copy, files)
            manifest = work_copy
            times.append(time.perf_counter() - started)
            if (i + 1) % window == 0:
                print(f"  {i + 1:6d} segments: median {median(times[-window:]) * 1000:7.1f} ms per upload",
                      flush=True)
        head = len(manifest.to_json())
        t0 = time.perf_counter()
        manifest.to_json()
        serialize = time.perf_counter() - t0
    finally:
        await s3.close()
    first, last = median(times[:window]), median(times[-window:])
    return {"first_ms": first * 1000, "last_ms": last * 1000, "ratio": ratio(last, first) or 0.0,
            "head_kib": head / 1024, "serialize_ms": serialize * 1000, "copy_max_ms": max(held) * 1000,
            "total_s": sum(times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.upload_backlog", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=3000)
    ap.add_argument("--window", type=int, default=100, help="uploads per median")
    ap.add_argument("--store", choices=("s3", "file"), default="s3")
    args = ap.parse_args(argv)
    if args.segments < 2 * args.window:
        ap.error("--segments must be at least twice --window")
    with tempfile.TemporaryDirectory(prefix="sediment-backlog-") as tmp:
        work = Path(tmp)
        store = Store(args.store, work, parallel=4)
        store.start()
        try:
            r = asyncio.run(_run(store, args.segments, args.window, work))
        finally:
            store.stop()
    print(f"upload backlog ({args.store}, {args.segments} segments of {BATCHES} batches):")
    print(f"  median per upload, first {args.window}: {r['first_ms']:.1f} ms; "
          f"last {args.window}: {r['last_ms']:.1f} ms; ratio {r['ratio']:.2f}")
    print(f"  manifest head {r['head_kib']:.0f} KiB, serialized in {r['serialize_ms']:.1f} ms; "
          f"longest manifest copy {r['copy_max_ms']:.1f} ms; all uploads {r['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
