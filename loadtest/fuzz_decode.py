"""Coverage-guided fuzzing (atheris, libFuzzer) of request decoding and record batch validation.

    python -m loadtest.fuzz_decode [--inputs 1000000] [--target decode|records|all] [--seed 1]

Two targets, each run for --inputs inputs in a child process of its own (libFuzzer owns the
process and leaves it by exit()), starting from the checked-in seed corpus (loadtest/fuzz_seeds,
`python -m loadtest.fuzz_corpus` regenerates it) copied to a scratch directory, since libFuzzer
adds the inputs it finds interesting to its corpus:
- decode: a request frame, as the server gets it after the size prefix: API key and version
  from its first bytes, then `service.kafka.decoding.decode_request`. It must either decode or
  refuse with MalformedRequest; a decoded request must have no None in a field its schema says
  is not nullable (what handlers iterate). Anything else is a finding.
- records: the record batches of a produce request through `tiering.records.validate_batches`
  (every other input first gets correct CRCs, so mutations reach the checks behind the CRC).
  It must accept or raise InvalidRecordError; accepted batches must be the ones iter_batches
  sees (what fetch and recovery walk) and take new offsets as produce assigns them.
A finding stops the child with libFuzzer's crash report and the input saved as
crash-* in the scratch directory; the parent then exits 1. A process abort (such as a failed
allocation in the native codec) or libFuzzer's -rss_limit_mb is a finding too.
Prints inputs/s and the outcome counts of each target.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.fuzz_corpus import SEEDS_DIR

TARGETS = ("decode", "records")
MAX_LEN = 8192  # enough for every seed and its growth; large frames are the socket fuzzer's


# -- the child: one target under libFuzzer ------------------------------------------------------


def _optional_fields(cls: type, cache: dict[type, tuple[tuple[str, bool, bool], ...]]) -> Any:
    """(name, nullable, is_entity_or_entity_tuple) of each field of a kio entity."""
    got = cache.get(cls)
    if got is None:
        from kio.serial._introspect import EntityField, EntityTupleField, classify_field, is_optional
        got = tuple((f.name, is_optional(f), isinstance(classify_field(f), (EntityField, EntityTupleField)))
                    for f in dataclasses.fields(cls))
        cache[cls] = got
    return got


def _check_nulls(obj: Any, cache: dict[type, Any], path: str) -> None:
    """A decoded request has None only where its schema allows it (what handlers rely on)."""
    for name, nullable, nested in _optional_fields(type(obj), cache):
        value = getattr(obj, name)
        if value is None:
            if not nullable:
                raise AssertionError(f"{path}.{name} decoded as None but the schema allows no null")
            continue
        if nested:
            for item in value if isinstance(value, tuple) else (value,):
                _check_nulls(item, cache, f"{path}.{name}")


def _version_marks(ranges: Any) -> dict[tuple[int, int], Any]:
    """A function of its own (so coverage edges of its own) per API version: the walk is the
    same code for every API, so without these libFuzzer would see no difference between a
    Produce and a Metadata input and keep only a few of the seeds' mutations."""
    import atheris

    marks = {}
    for key, rng in ranges.items():
        for version in range(rng.usable_min, rng.max + 1):
            scope: dict[str, Any] = {}
            exec(f"def mark_{key}_{version}():\n    return {key * 100 + version}", scope)
            marks[key, version] = atheris.instrument_func(scope[f"mark_{key}_{version}"])
    return marks


def _decode_target(counts: collections.Counter[str]) -> Any:
    from service.kafka.decoding import MalformedRequest, decode_request, prepare
    from service.kafka.versions import API_RANGES

    for key, rng in API_RANGES.items():
        for version in range(rng.usable_min, rng.max + 1):
            prepare(key, version)
    head = struct.Struct(">hh")
    cache: dict[type, Any] = {}
    marks = _version_marks(API_RANGES)

    def one(data: bytes) -> None:
        if len(data) < 8:  # the framing refuses frames shorter than the fixed header
            counts["short frame"] += 1
            return
        key, version = head.unpack_from(data)
        rng = API_RANGES.get(key)
        if rng is None or not rng.served(version):  # closed by the server before decoding
            counts["not served"] += 1
            return
        marks[key, version]()
        try:
            _, request = decode_request(key, version, data)
        except MalformedRequest as e:
            counts[f"refused: {e.kind}"] += 1
            return
        _check_nulls(request, cache, type(request).__name__)
        counts["decoded"] += 1
    return one


def _records_target(counts: collections.Counter[str]) -> Any:
    from tiering.records import (
        ATTRIBUTES_OFFSET,
        CRC_OFFSET,
        LENGTH_OFFSET,
        InvalidRecordError,
        assign_offsets,
        crc32c,
        iter_batches,
        validate_batches,
    )

    def fix_crcs(buf: bytearray) -> None:
        pos = 0
        while pos + ATTRIBUTES_OFFSET <= len(buf):
            length = struct.unpack_from(">i", buf, pos + LENGTH_OFFSET)[0]
            end = pos + 12 + length
            if length < 0 or end > len(buf):
                return
            struct.pack_into(">I", buf, pos + CRC_OFFSET, crc32c(bytes(buf[pos + ATTRIBUTES_OFFSET:end])))
            pos = end

    def one(data: bytes) -> None:
        if not data:
            counts["empty"] += 1
            return
        buf = bytearray(data[1:])
        if data[0] & 1:
            fix_crcs(buf)
        try:
            headers = validate_batches(bytes(buf), 1 << 20)
        except InvalidRecordError as e:
            counts[f"refused: {e.reason.name}"] += 1
            return
        seen = [(h.position, h.size) for h in iter_batches(buf)]
        if seen != [(h.position, h.size) for h in headers]:
            raise AssertionError(f"validated batches {headers} but iter_batches sees {seen}")
        last = assign_offsets(buf, headers, 1000, None)
        if last != 1000 + sum(h.last_offset_delta + 1 for h in headers) - 1:
            raise AssertionError(f"offsets up to {last} assigned to {headers}")
        counts["accepted"] += 1
    return one


def child(target: str, inputs: int, corpus: Path, stats: Path, seed: int) -> None:
    import atheris

    counts: collections.Counter[str] = collections.Counter()
    with atheris.instrument_imports(include=["service.kafka.decoding", "tiering.records", "kio"]):
        one = _decode_target(counts) if target == "decode" else _records_target(counts)
    done = 0
    started = time.monotonic()

    def test_one_input(data: bytes) -> None:
        nonlocal done
        one(data)
        done += 1
        if done >= inputs:  # libFuzzer counts its corpus reads as runs too: stop at our count
            stats.write_text(json.dumps({"inputs": done, "seconds": time.monotonic() - started,
                                         "counts": dict(counts)}))
            sys.stdout.flush()
            os._exit(0)

    atheris.Setup([sys.argv[0], f"-runs={inputs * 2 + 10_000}", f"-max_len={MAX_LEN}", f"-seed={seed}",
                   "-rss_limit_mb=2048", "-timeout=10", "-keep_seed=1", "-use_value_profile=1", "-print_final_stats=0",
                   f"-artifact_prefix={corpus.parent}/", str(corpus)], test_one_input)
    atheris.Fuzz()


# -- the parent --------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    target: str
    ok: bool
    inputs: int
    seconds: float
    counts: dict[str, int]
    output: str


def run_target(target: str, inputs: int, seed: int, seeds: Path = SEEDS_DIR, timeout: float | None = None,
               keep: Path | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        corpus.mkdir()
        for f in seeds.iterdir():
            if f.name.startswith("records-") == (target == "records"):
                data = f.read_bytes()
                # The records target's first byte picks whether CRCs are fixed up.
                (corpus / f.name).write_bytes(b"\x00" + data if target == "records" else data)
        stats = work / "stats.json"
        cmd = [sys.executable, "-m", "loadtest.fuzz_decode", "--child", target, "--inputs", str(inputs),
               "--corpus", str(corpus), "--stats", str(stats), "--seed", str(seed)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        elapsed = time.monotonic() - started
        ok = proc.returncode == 0 and stats.exists()
        output = "".join(line for line in (proc.stdout + proc.stderr).splitlines(keepends=True)
                         if not line.startswith("INFO: Instrumenting"))
        result = Result(target, ok, 0, elapsed, {}, output)
        if stats.exists():
            data = json.loads(stats.read_text())
            result.inputs, result.seconds, result.counts = data["inputs"], data["seconds"], data["counts"]
        if keep is not None and not ok:
            keep.mkdir(parents=True, exist_ok=True)
            for crash in work.glob("crash-*"):
                shutil.copy(crash, keep / f"{target}-{crash.name}")
        return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz request decoding and record batch validation (atheris).")
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (1000000)")
    ap.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (1)")
    ap.add_argument("--keep", type=Path, default=Path("fuzz-findings"),
                    help="where the inputs of findings are copied (./fuzz-findings)")
    ap.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.inputs, args.corpus, args.stats, args.seed)
        return 0
    failed = False
    for target in TARGETS if args.target == "all" else (args.target,):
        r = run_target(target, args.inputs, args.seed, keep=args.keep)
        rate = r.inputs / r.seconds if r.seconds else 0.0
        print(f"{target}: {r.inputs} inputs in {r.seconds:.1f} s ({rate:,.0f} inputs/s): "
              f"{'no finding' if r.ok else 'FINDING'}")
        for outcome, n in sorted(r.counts.items(), key=lambda kv: -kv[1]):
            print(f"  {n:>10}  {outcome}")
        if not r.ok:
            failed = True
            print(r.output[-6000:])
            print(f"inputs of findings copied to {args.keep}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
