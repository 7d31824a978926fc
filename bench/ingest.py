"""cortexloop bench ingest: spikes per second decoded and binned through each acquisition source, on loopback.

    cortexloop bench ingest [--json out.json] [--native-spikes N] [--openephys-spikes N] [--lsl-spikes N]
                            [--units 384] [--sources native openephys lsl]

For each source a publisher process (its own core where there is one) sends a
recorded-looking stream, every message encoded before the clock starts so the
publisher is not what is measured: `units` units firing together at about
10,000 spikes/s of stream time (a 384-channel probe), an onset code every 0.2 s.
This process reads it through the very part a session plugs in, and bins it as
the engine does (SpikeRecord.add; once per 1.6 s trial of stream, the spike
counts of its five response windows; then forgetting what no window needs):

- native: ZmqAcquisitionSource, SpikeBatch messages of `--batch` spikes (the
  virtual cortex's wire format);
- openephys: OpenEphysSource, one Event Broadcaster JSON message per spike, the
  codes as return-to-zero TTL words;
- lsl: LslAcquisitionSource (acquisition/lsl_source.py), where pylsl is present.

Reported per source: spikes sent, received and lost (must be 0), codes sent and
lost, the rate over the wall-clock time from the first message to the last
(what the stream sustained on this machine, with whatever else it runs) and
per second of this process's CPU time (receiving, decoding, binning: what the
reader costs, so what one core sustains). Goals: native >= 1,000,000 spikes/s,
Open Ephys JSON >= 100,000 spikes/s, judged on the CPU rate with nothing lost;
the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPIKE_RATE_HZ = 10_000.0  # stream time: a 384-channel probe fires on the order of 10,000 spikes/s
CODE_EVERY_S = 0.2  # an onset code per 0.2 s of stream, like a trial's images
TRIAL_S = 1.6  # the default rig's trial: 300 ms fixation, five images of 100 + 100 ms, 300 ms between trials
TRIAL_FIXATION_S = 0.3
SAMPLE_RATE = 30_000.0
GOALS = {"native": 1_000_000, "openephys": 100_000}
IDLE_LIMIT_S = 10.0  # a reader that gets nothing this long has received all it will


def stream(n_spikes: int, n_units: int, seed: int = 0):
    """(unit, sample number) sorted by sample, and the code samples: the recording every source carries."""
    rng = np.random.default_rng(seed)
    duration = n_spikes / SPIKE_RATE_HZ
    samples = np.sort(rng.integers(0, int(duration * SAMPLE_RATE), n_spikes))
    units = rng.integers(0, n_units, n_spikes)
    codes = np.arange(CODE_EVERY_S, duration - 1.0, CODE_EVERY_S)
    return units.astype(np.int64), samples.astype(np.int64), np.rint(codes * SAMPLE_RATE).astype(np.int64)


# -- publishers (child processes) ------------------------------------------------------------------------------
def _publish_native(endpoint, n_spikes, n_units, batch, ready, go, result):
    import zmq

    from contract import messages as m

    units, samples, code_samples = stream(n_spikes, n_units)
    times = samples / SAMPLE_RATE
    frames, total = [], 0
    for k, i in enumerate(range(0, n_spikes, batch)):
        nrn, t = units[i : i + batch].astype(np.uint16), times[i : i + batch]
        total += len(nrn)
        frames.append(
            m.encode(
                m.SpikeBatch(
                    stream="bench",
                    seq=k + 1,
                    t_start_s=float(t[0]),
                    t_end_s=float(t[-1]),
                    total_spikes=total,
                    neuron=nrn,
                    time_s=t,
                )
            )
        )
    codes = [
        m.encode(m.EventCode(stream="bench", seq=k + 1, code=20, time_s=float(s / SAMPLE_RATE), clock="acquisition"))
        for k, s in enumerate(code_samples)
    ]
    # Each code goes out before the first batch that starts after it, as a recording system sends them.
    at = np.searchsorted(samples[::batch], code_samples, side="right")
    order = []
    j = 0
    for k, f in enumerate(frames):
        while j < len(codes) and at[j] <= k:
            order.append(codes[j])
            j += 1
        order.append(f)
    order.extend(codes[j:])
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(endpoint)
    ready.set()
    hb = 0
    while not go.wait(0.02):  # heartbeats say what the stream is until the reader has heard one
        hb += 1
        m.send(pub, m.Heartbeat(role="cortex", seq=hb, clock_s=0.0, stream="bench", info={"n_neurons": n_units}))
    t0 = time.perf_counter()
    for f in order:
        pub.send_multipart(f, copy=False)
    m.send(
        pub,
        m.Heartbeat(
            role="cortex",
            seq=hb + 1,
            clock_s=float(times[-1]) + 1.0,
            stream="bench",
            info={"n_neurons": n_units, "batch_seq": len(frames)},
        ),
    )
    result.put({"send_s": time.perf_counter() - t0, "codes": len(codes)})
    pub.close(linger=-1)
    ctx.term()


def _publish_openephys(endpoint, n_spikes, n_units, ready, go, result):
    import zmq

    from acquisition import openephys
    from acquisition.ttl import Lines, TtlEncoder

    units, samples, code_samples = stream(n_spikes, n_units)
    spikes = openephys.encode_spikes(units, samples / SAMPLE_RATE, SAMPLE_RATE, stream="bench")
    enc = TtlEncoder(Lines(8, "return_to_zero"), 150)
    ttl = [
        (t.sample, openephys.encode_ttl(t.sample, t.line, t.state, SAMPLE_RATE, stream="bench"))
        for s in code_samples
        for t in enc.write(20, int(s))[1]
    ]
    # In sample order, spikes and TTL events together, as the Event Broadcaster sends them.
    keys = np.concatenate([samples, np.array([s for s, _ in ttl], np.int64)])
    msgs = spikes + [f for _, f in ttl]
    order = [msgs[i] for i in np.argsort(keys, kind="stable")]
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(endpoint)
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    for f in order:
        pub.send_multipart(f)
    result.put({"send_s": time.perf_counter() - t0, "codes": len(code_samples)})
    pub.close(linger=-1)
    ctx.term()


def _publish_lsl(name, n_spikes, n_units, chunk, ready, go, result, finished):
    from acquisition.lsl_source import LslCodeOutlet, LslSpikeOutlet

    units, samples, code_samples = stream(n_spikes, n_units)
    spikes = LslSpikeOutlet(name + "-spikes", n_units)
    codes = LslCodeOutlet(name + "-codes")
    import pylsl

    t_lsl = pylsl.local_clock()  # LSL stamps: the stream's clock, started now on this machine's local_clock
    times = [t_lsl + s / SAMPLE_RATE for s in samples]
    ready.set()
    spikes.wait_for_consumers(30)
    codes.wait_for_consumers(30)
    go.wait()
    t0 = time.perf_counter()
    j = 0
    for i in range(0, n_spikes, chunk):
        end_sample = samples[min(i + chunk, n_spikes) - 1]
        while j < len(code_samples) and code_samples[j] <= end_sample:
            codes.push(20, t_lsl + code_samples[j] / SAMPLE_RATE)
            j += 1
        spikes.push(units[i : i + chunk], times[i : i + chunk])
    result.put({"send_s": time.perf_counter() - t0, "codes": len(code_samples)})
    finished.wait(120)  # the outlets stay until the reader has closed its inlets


# -- the reader (this process) ---------------------------------------------------------------------------------
class Binner:
    """The engine's binning, trial by trial: spikes into a SpikeRecord; once the stream's clock has passed a
    trial's last response window, the spike counts of its five windows (50-200 ms after onsets 0.2 s apart,
    the default rig's), then the record trimmed to what later trials need."""

    def __init__(self, n_units: int):
        from acquisition.binning import SpikeRecord

        self.record = SpikeRecord(n_units)
        self.onsets = None
        self.windows = 0

    def add(self, msg) -> int:
        from contract import messages as m

        if isinstance(msg, m.SpikeBatch):
            self.record.add(msg.neuron, msg.time_s, msg.t_end_s)
            if self.onsets is None and len(msg.time_s):
                self.onsets = float(msg.time_s[0]) + TRIAL_FIXATION_S + np.arange(5) * CODE_EVERY_S
            self._collect()
            return len(msg.neuron)
        if isinstance(msg, m.Heartbeat) and msg.stream:
            self.record.advance(msg.clock_s)
            self._collect()
        return 0

    def _collect(self) -> None:
        while self.onsets is not None and self.record.complete(self.onsets[-1] + 0.2):
            self.record.counts(self.onsets + 0.05, self.onsets + 0.2)
            self.windows += len(self.onsets)
            self.record.forget_before(self.onsets[0])
            self.onsets = self.onsets + TRIAL_S


def read(source, n_spikes: int, n_units: int, go) -> dict:
    from contract import messages as m

    binner = Binner(n_units)
    received = codes = 0
    first = last = None
    cpu = 0.0
    go.set()
    idle_since = time.monotonic()
    while received < n_spikes and time.monotonic() - idle_since < IDLE_LIMIT_S:
        c0 = time.process_time()
        msgs = source.poll(0.05)
        for msg in msgs:
            received += binner.add(msg)
            if isinstance(msg, m.EventCode) and msg.code == 20:
                codes += 1
        if msgs:
            now = time.perf_counter()
            first = first if first is not None else now
            last = now
            idle_since = time.monotonic()
            cpu += time.process_time() - c0
    # The last words close once the stream's clock passes them: poll a little longer for them.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        msgs = source.poll(0.05)
        codes += sum(1 for x in msgs if isinstance(x, m.EventCode) and x.code == 20)
        received += sum(binner.add(x) for x in msgs if isinstance(x, m.SpikeBatch))
    wall = (last - first) if first is not None and last != first else float("nan")
    return {
        "received": received,
        "codes_received": codes,
        "wall_s": wall,
        "cpu_s": cpu,
        "windows": binner.windows,
        "spikes_per_s": received / wall if wall == wall and wall > 0 else None,
        "spikes_per_cpu_s": received / cpu if cpu > 0 else None,
    }


def run_source(name: str, n_spikes: int, n_units: int, batch: int, workdir: Path) -> dict:
    from contract import messages as m  # noqa: F401  (imported before the child starts: same start-up cost)

    ctx = mp.get_context("spawn")
    ready, go, result, finished = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Event()
    endpoint = f"ipc://{workdir}/{name}.sock"
    if name == "native":
        proc = ctx.Process(target=_publish_native, args=(endpoint, n_spikes, n_units, batch, ready, go, result))
    elif name == "openephys":
        proc = ctx.Process(target=_publish_openephys, args=(endpoint, n_spikes, n_units, ready, go, result))
    else:
        proc = ctx.Process(
            target=_publish_lsl, args=(f"bench-{os.getpid()}", n_spikes, n_units, 1000, ready, go, result, finished)
        )
    proc.start()
    source = None
    try:
        if not ready.wait(300):
            raise RuntimeError(f"{name}: the publisher did not start")
        source = _make_source(name, endpoint, n_units, workdir)
        info = source.describe(30.0)
        if not info or info.get("n_neurons") != n_units:
            raise RuntimeError(f"{name}: the source did not describe the stream ({info})")
        out = read(source, n_spikes, n_units, go)
        sent = result.get(timeout=60)
    finally:
        if source is not None:
            source.close()
        go.set()
        finished.set()
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    out.update(
        {
            "source": name,
            "spikes_sent": n_spikes,
            "spikes_lost": n_spikes - out["received"],
            "codes_sent": sent["codes"],
            "codes_lost": sent["codes"] - out["codes_received"],
            "publisher_send_s": sent["send_s"],
            "goal_spikes_per_s": GOALS.get(name),
        }
    )
    goal = GOALS.get(name)
    # Judged on the reader's CPU time: on a shared machine the wall-clock rate measures the other work too.
    out["goal_met"] = (
        None
        if goal is None
        else bool(
            out["spikes_per_cpu_s"]
            and out["spikes_per_cpu_s"] >= goal
            and out["spikes_lost"] == 0
            and out["codes_lost"] == 0
        )
    )
    return out


def _make_source(name: str, endpoint: str, n_units: int, workdir: Path):
    from controller.clocks import VirtualClock

    if name == "native":
        from transport.zmq_parts import ZmqAcquisitionSource

        return ZmqAcquisitionSource({"acquisition_pub": endpoint, "acquisition_events": f"ipc://{workdir}/ctl.sock"})
    if name == "openephys":
        from acquisition.config import OpenEphysConfig, TtlConfig
        from acquisition.openephys import UnitLayout
        from acquisition.openephys_source import OpenEphysSource

        cfg = OpenEphysConfig(units=UnitLayout().units(n_units))  # named as the publisher names them
        # A virtual clock: the reader's speed, not the wall clock, decides when windows complete.
        return OpenEphysSource(cfg, TtlConfig(), endpoint, SAMPLE_RATE, VirtualClock())
    from acquisition.lsl_source import LslAcquisitionSource

    return LslAcquisitionSource(
        f"bench-{os.getpid()}-spikes", f"bench-{os.getpid()}-codes", n_units, margin_ms=0.0, stale_after_s=IDLE_LIMIT_S
    )


def lsl_available() -> str | None:
    """None if the LSL source can run here, else why not."""
    try:
        import pylsl  # noqa: F401

        import acquisition.lsl_source  # noqa: F401
    except Exception as err:  # pylsl raises RuntimeError when liblsl is missing
        return f"{type(err).__name__}: {err}"
    return None


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'source':<10} {'spikes':>10} {'lost':>5} {'codes lost':>10} {'wall spikes/s':>14} "
        f"{'CPU spikes/s':>13} {'goal':>10}  result"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['source']:<10} skipped: {r['skipped']}")
            continue
        rate = f"{r['spikes_per_s']:,.0f}" if r["spikes_per_s"] else "n/a"
        cpu = f"{r['spikes_per_cpu_s']:,.0f}" if r["spikes_per_cpu_s"] else "n/a"
        goal = f"{r['goal_spikes_per_s']:,}" if r["goal_spikes_per_s"] else "-"
        verdict = "-" if r["goal_met"] is None else ("met" if r["goal_met"] else "MISSED")
        lines.append(
            f"{r['source']:<10} {r['received']:>10,} {r['spikes_lost']:>5} {r['codes_lost']:>10} "
            f"{rate:>14} {cpu:>13} {goal:>10}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench ingest` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument(
        "--sources", nargs="+", default=["native", "openephys", "lsl"], choices=["native", "openephys", "lsl"]
    )
    ap.add_argument("--native-spikes", type=int, default=3_000_000)
    ap.add_argument("--openephys-spikes", type=int, default=300_000)
    ap.add_argument("--lsl-spikes", type=int, default=1_000_000)
    ap.add_argument("--units", type=int, default=384)
    ap.add_argument("--batch", type=int, default=1000, help="spikes per native SpikeBatch")
    args = ap.parse_args(argv)
    if not 1 <= args.units <= 65_536:
        ap.error("--units must be 1..65536")
    counts = {"native": args.native_spikes, "openephys": args.openephys_spikes, "lsl": args.lsl_spikes}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cortexloop-ingest-") as tmp:
        workdir = Path(tmp)
        if "lsl" in args.sources and lsl_available() is None:
            from acquisition.lsl_source import use_lsl_config

            use_lsl_config(workdir)  # before any LSL stream, here and in the publisher (it inherits the setting)
        for name in args.sources:
            why = lsl_available() if name == "lsl" else None
            if why is not None:
                rows.append({"source": name, "skipped": why})
                continue
            print(f"{name}: {counts[name]:,} spikes ...", file=sys.stderr, flush=True)
            rows.append(run_source(name, counts[name], args.units, args.batch, workdir))
    print(format_table(rows))
    print(f"(goals judged on CPU spikes/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    result = {
        "benchmark": "ingest",
        "units": args.units,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "sources": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    missed = [r["source"] for r in rows if r.get("goal_met") is False]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
