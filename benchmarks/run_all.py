"""``make bench``: run every benchmark script, then write ``benchmarks/results.md``.

Each benchmark runs in its own process and hands back JSON; a benchmark that fails is
reported as failed in results.md and makes this script exit 1. Every figure is quoted
against its target from issue 10, met or missed, with the reason where one is missed.
``benchmarks/baseline/`` holds the SOAP figures and profile measured before the
performance fixes (``soap.json``, ``profile.json``) and the SOAP figures with the
shortcuts issue 15 removed (``shortcuts.json``) and before the tuning that followed
(``tuning.json``), for the before/after tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import common

BENCHMARKS = ("soap", "breakdown", "memory", "startup", "reconcile", "events", "snapshot", "profile")
SCRIPTS = {name: f"bench_{name}.py" for name in BENCHMARKS} | {"profile": "profile_soap.py"}
RESULTS = common.HERE / "results.md"
BASELINE = common.HERE / "baseline"
MIB = 1024


def run_all(only: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the benchmarks; (figures by name, failure text by name)."""
    figures: dict[str, Any] = {}
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp:
        for name in only:
            out = Path(tmp) / f"{name}.json"
            common.stderr(f"== {name}")
            started = time.monotonic()
            done = subprocess.run([sys.executable, str(common.HERE / SCRIPTS[name]), "--json", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=common.ROOT)
            sys.stderr.write(done.stderr)
            if done.returncode != 0 or not out.exists():
                failures[name] = (done.stderr.strip().splitlines() or ["no output"])[-1]
                continue
            figures[name] = json.loads(out.read_text(encoding="utf-8"))
            figures[name]["wall_s"] = time.monotonic() - started
    return figures, failures


def _git() -> tuple[str, str]:
    """(commit and whether atomrelay/ has uncommitted changes, a fingerprint of the atomrelay/ sources)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=common.ROOT).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("diff", "HEAD", "--", "atomrelay")
    label = f"{commit}{' + uncommitted changes in atomrelay/' if dirty else ''}"
    return label, git("rev-parse", "HEAD:atomrelay") + dirty


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- formatting -----------------------------------------------------------------------------


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _in_place(us: dict[str, float]) -> tuple[float, float, float]:
    """The token check, the parse and the rest of the SOAP layer, in place (``bench_breakdown.py``)."""
    return (us["relay"] - us["relay_token_free"], us["relay_token_free"] - us["relay_parse_free"],
            us["relay_parse_free"] - us["relay_http"])


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


class Report:
    """results.md, section by section."""

    def __init__(self, figures: dict[str, Any], failures: dict[str, str]) -> None:
        self.f = figures
        self.failures = failures
        self.summary: list[tuple[str, str, str, bool | None, str]] = []
        self.sections: list[str] = []

    def target(self, figure: str, target: str, measured: str, met: bool | None, note: str = "") -> None:
        """One row of the summary table."""
        self.summary.append((figure, target, measured, met, note))

    def failed(self, name: str, figure: str, target: str) -> bool:
        """True when the benchmark has no figures; a failed one's targets are recorded as missed."""
        if name in self.f:
            return False
        if name in self.failures:
            self.target(figure, target, "not measured", False, f"benchmark `{name}` failed: {self.failures[name]}")
        return True

    # --- SOAP --------------------------------------------------------------------------

    def soap(self) -> None:
        """Throughput/latency tables and the ratio targets."""
        targets = {1: 0.8, 16: 0.6}
        stock_target = 1.5
        if self.failed("soap", "SOAP GetProfiles, relay / bare server", "≥ 0.8× (1 camera), ≥ 0.6× (16 cameras)"):
            return
        lines = ["## SOAP throughput and latency", "",
                 "wrk, 1 thread, keep-alive connections; each figure is the fastest of "
                 f"{self.f['soap'].get('repeats', 1)} runs of {self.f['soap']['duration_s']:g} s after a warm-up. "
                 "`minimal` is the ceiling: twisted.web "
                 "answering the relay's own answer bytes with no access log and no form parsing; `stock` is the same "
                 "with twisted.web's defaults. Every authenticated request has its own nonce (see "
                 "`bench_soap.py`); `errors` counts non-2xx answers and socket errors, `wrapped` requests sent "
                 "twice. Ratios are relay / minimal.", ""]
        worst_p99_16 = 0.0
        for scenario in self.f["soap"]["scenarios"]:
            lines += [f"### {scenario['name']} ({_n(scenario['answer_bytes'])} byte answer)", "",
                      "| connections | minimal req/s | stock req/s | relay req/s | relay p50 / p99 | relay / minimal "
                      "| relay / stock | relay -v (access log on): req/s, / minimal | errors, wrapped |",
                      "|---|---|---|---|---|---|---|---|---|"]
            ratios, stock_ratios = [], []
            for connections, run in scenario["runs"].items():
                relay, minimal, stock = run["relay"], run["minimal"], run["stock"]
                logged = run.get("relay_access_log")
                ratio = relay["rate"] / minimal["rate"]
                ratios.append(ratio)
                stock_ratios.append(relay["rate"] / stock["rate"])
                if connections == "16":
                    worst_p99_16 = max(worst_p99_16, relay["latency_ms"]["p99"])
                logged_text = f"{_n(logged['rate'])}, {logged['rate'] / minimal['rate']:.2f}×" if logged else "—"
                lines.append(
                    f"| {connections} | {_n(minimal['rate'])} | {_n(stock['rate'])} | {_n(relay['rate'])} "
                    f"| {_ms(relay['latency_ms']['p50'])} / {_ms(relay['latency_ms']['p99'])} | {ratio:.2f}× "
                    f"| {relay['rate'] / stock['rate']:.2f}× | {logged_text} "
                    f"| {relay['errors']}, {relay['wrapped']} |")
            lines.append("")
            wanted = targets.get(scenario["cameras"]) if scenario["signed"] else None
            if wanted is not None:
                note = ""
                if min(ratios) < wanted:
                    note = (f"the ceiling does no SOAP work at all; against twisted.web with its defaults the relay "
                            f"makes {min(stock_ratios):.2f}–{max(stock_ratios):.2f}×. "
                            + self._breakdown_note(scenario["cameras"]))
                self.target(f"SOAP {scenario['name']}: relay / bare (1, 16, 64 connections)", f"≥ {wanted}×",
                            " / ".join(f"{r:.2f}×" for r in ratios), min(ratios) >= wanted, note)
                at_16 = scenario["runs"].get("16")
                if at_16 is not None:
                    relay_16, stock_16 = at_16["relay"], at_16["stock"]
                    cpu_ratio = stock_16["cpu_us"] / relay_16["cpu_us"]
                    measured = (f"{cpu_ratio:.2f}× ({relay_16['cpu_us']:.0f} µs against {stock_16['cpu_us']:.0f} µs; "
                                f"by req/s {relay_16['rate'] / stock_16['rate']:.2f}×)")
                    paired = scenario.get("paired")
                    if paired:
                        # Pairs with errors are left out (see bench_soap.py).
                        pair_ratios = [pair["ratio"] for pair in paired["pairs"] if not pair["errors"]]
                        median = statistics.median(pair_ratios) if pair_ratios else None
                        lines += self._pairs_table(paired, median)
                        summary = (f"{median:.2f}× (median of {len(pair_ratios)} interleaved pairs, "
                                   f"{min(pair_ratios):.2f}–{max(pair_ratios):.2f}×" if median is not None
                                   else "not measured (every interleaved pair had errors")
                        measured = f"{summary}; the table's fastest runs: {measured})"
                        cpu_ratio = median if median is not None else 0.0
                    self.target(
                        f"SOAP {scenario['name']}, 16 connections: relay / stock twisted.web, by CPU time per request "
                        "(issue 15)", f"≥ {stock_target}×", measured, cpu_ratio >= stock_target,
                        "" if cpu_ratio >= stock_target else self._breakdown_note(scenario["cameras"]))
        self.target("SOAP p99 latency at 16 connections (worst scenario)", "≤ 25 ms", _ms(worst_p99_16),
                    worst_p99_16 <= 25.0)
        lines += self._before_after()
        lines += self._shortcuts_before_after()
        lines += self._tuning_before_after()
        self.sections.append("\n".join(lines))

    @staticmethod
    def _pairs_table(paired: dict[str, Any], median: float | None) -> list[str]:
        """The interleaved stock/relay pairs behind issue 15's figure."""
        rows = ["Issue 15's figure, interleaved: stock twisted.web and the relay both up, "
                f"{len(paired['pairs'])} pairs of {paired['seconds']:g} s runs at {paired['connections']} connections, "
                "the two taking turns to go first (see `bench_soap.py`). CPU µs per request:", "",
                "| pair | stock | relay | stock / relay | errors (the pair is left out of the median) |",
                "|---|---|---|---|---|"]
        for index, pair in enumerate(paired["pairs"], 1):
            rows.append(f"| {index} | {pair['stock_cpu_us']:.0f} | {pair['relay_cpu_us']:.0f} "
                        f"| {pair['ratio']:.2f}× | {pair['errors']} |")
        rows += [f"| median | | | **{median:.2f}×** | |" if median is not None else "| median | | | none: every pair had errors | |", ""]
        return rows

    def _breakdown_note(self, cameras: int) -> str:
        found = [b for b in self.f.get("breakdown", {}).get("breakdowns", []) if b["cameras"] == cameras]
        if not found:
            return "See the profile for where the time goes."
        us = found[0]["us_per_request"]
        token, parse, rest = _in_place(us)
        return (f"Per request without sockets (see \"Where the time goes\"): the ceiling {us['bare']:.1f} µs, the "
                f"relay's HTTP layer {us['relay_http']:.1f} µs, the relay {us['relay']:.1f} µs; its SOAP layer's "
                f"{us['relay'] - us['relay_http']:.1f} µs are, measured in place, checking the token {token:.1f}, "
                f"parsing the request {parse:.1f} and the envelope, dispatch, the request context and the reply "
                f"cache {rest:.1f}: Python that a fixed answer does not run")

    def breakdown(self) -> None:
        """Per-request costs without sockets."""
        if "breakdown" not in self.f:
            if "breakdown" in self.failures:
                self.sections.append(f"## Where the time goes\n\nThe breakdown failed: {self.failures['breakdown']}\n")
            return
        data = self.f["breakdown"]
        lines = ["## Where the time goes", "",
                 "Authenticated GetProfiles fed to each server's Site in this process over a `StringTransport` "
                 f"(no sockets, no event loop; fastest of {data['rounds']} rounds of {_n(data['per_round'])} "
                 "requests; `bench_breakdown.py`). `relay HTTP layer` is the relay's Site and resource tree with the "
                 "SOAP layer answering the fixed bytes (twisted.web with the relay's guards, no form parsing, no access "
                 "log, straight routes to the SOAP endpoints, the socket asked for its addresses once per connection; "
                 "`atomrelay/web/limits.py`). Every request is parsed and its token checked; the answer comes from the "
                 "reply cache. *In place*, a step's cost is how much faster the relay answers when that step gives "
                 "its first result again instead of doing the work; *alone*, the step is timed in a loop of its own. "
                 "A step costs more in place than alone, most likely because between two requests twisted.web's own "
                 "code pushes the step's code and data out of the CPU's caches.", "",
                 "| cameras | ceiling | relay HTTP layer | relay | in place: token | parse | rest of the SOAP layer "
                 "| alone: parse | envelope | token from the tree |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for b in data["breakdowns"]:
            us, stages = b["us_per_request"], b["stages_us"]
            token, parse, rest = _in_place(us)
            lines.append(f"| {b['cameras']} | {us['bare']:.1f} µs | {us['relay_http']:.1f} µs | {us['relay']:.1f} µs "
                         f"| {token:.1f} µs | {parse:.1f} µs | {rest:.1f} µs "
                         f"| {stages['parse']:.1f} µs | {stages['envelope']:.1f} µs | {stages['ws_security']:.1f} µs |")
        self.sections.append("\n".join(lines) + "\n")

    def _before_after(self) -> list[str]:
        path = BASELINE / "soap.json"
        if not path.exists():
            return []
        meta = json.loads((BASELINE / "meta.json").read_text(encoding="utf-8")) if (BASELINE / "meta.json").exists() \
            else {}
        return self._compared(
            json.loads(path.read_text(encoding="utf-8")), "### Before and after the performance fixes",
            f"Before: {meta.get('what', 'benchmarks/baseline/soap.json')}. After: this run. Relay req/s "
            "(p99) at 1 / 16 / 64 connections; the bare servers did not change.",
            lambda r: f"{_n(r['relay']['rate'])} ({_ms(r['relay']['latency_ms']['p99'])})")

    def _shortcuts_before_after(self) -> list[str]:
        return self._against_file(
            "shortcuts.json", "### Before and after removing the shortcuts (issue 15)",
            "After: this run, where every request is parsed and its token checked from the tree, through "
            "twisted.web's own line reader. Relay req/s (relay / stock twisted.web) at 1 / 16 / 64 connections.",
            lambda r: f"{_n(r['relay']['rate'])} ({r['relay']['rate'] / r['stock']['rate']:.2f}×)")

    def _tuning_before_after(self) -> list[str]:
        return self._against_file(
            "tuning.json", "### Before and after the token-check and envelope tuning (issue 15)",
            "After: this run (the UsernameToken read in one pass, no frozen dataclass per request, the replay "
            "memory's check and insert in one call). Relay CPU µs per request (relay / stock twisted.web by CPU "
            "time) at 1 / 16 / 64 connections; after / before compares req/s.",
            lambda r: f"{r['relay']['cpu_us']:.0f} ({r['stock']['cpu_us'] / r['relay']['cpu_us']:.2f}×)")

    def _against_file(self, name: str, heading: str, after: str, cell: Any) -> list[str]:
        """A before/after table against ``baseline/<name>`` (none if it is missing), whose ``what`` says what it is."""
        path = BASELINE / name
        if not path.exists():
            return []
        baseline = json.loads(path.read_text(encoding="utf-8"))
        return self._compared(baseline, heading, f"Before: {baseline['what']}. {after}", cell)

    def _compared(self, baseline: dict[str, Any], heading: str, what: str, cell: Any) -> list[str]:
        """A before/after table of the relay's SOAP figures against ``baseline``, a cell per run by ``cell``."""
        before = {s["name"]: s for s in baseline["scenarios"]}
        lines = [heading, "", what, "", "| scenario | before | after | after / before |", "|---|---|---|---|"]
        for scenario in self.f["soap"]["scenarios"]:
            old = before.get(scenario["name"])
            if old is None:
                continue
            cells = [" / ".join(cell(r) for r in runs.values()) for runs in (old["runs"], scenario["runs"])]
            gains = " / ".join(f"{scenario['runs'][c]['relay']['rate'] / old['runs'][c]['relay']['rate']:.2f}×"
                               for c in scenario["runs"] if c in old["runs"])
            lines.append(f"| {scenario['name']} | {cells[0]} | {cells[1]} | {gains} |")
        return [*lines, ""]

    # --- memory --------------------------------------------------------------------------

    def memory(self) -> None:
        """RSS after start and growth under mixed load."""
        if self.failed("memory", "RSS with 16 cameras after start; growth after warm-up", "≤ 60 MB; ≤ 5 %"):
            return
        memory = self.f["memory"]
        lines = ["## Memory", "", "RSS (VmRSS) of the relay process once it answers, has registered every path "
                 "and had 3 s for its first health checks and model detections.", "",
                 "| cameras | RSS after start |", "|---|---|"]
        for row in memory["start"]:
            lines.append(f"| {row['cameras']} | {row['rss_kib'] / MIB:.1f} MiB ({row['rss_kib'] * 1.024 / 1000:.1f} MB) |")
        sixteen = next(row["rss_kib"] for row in memory["start"] if row["cameras"] == 16)
        self.target("RSS after start, 16 cameras", "≤ 60 MB", f"{sixteen / MIB:.1f} MiB ({sixteen * 1.024 / 1000:.1f} MB)",
                    sixteen * 1024 <= 60_000_000,
                    "" if sixteen * 1024 <= 60_000_000 else self._memory_note(memory))
        imports = memory.get("imports")
        if imports:
            steps = list(imports["plain"])
            lines += ["", "RSS of a bare interpreter after each group of imports: as the relay imports them (Twisted's "
                      "networking first, with pyOpenSSL hidden: `atomrelay.tls`, which loads TLS on the first https "
                      "request) and in the plain order, where Twisted loads pyOpenSSL and cryptography at once:", "",
                      "| | " + " | ".join(steps) + " |", "|---" * (len(steps) + 1) + "|",
                      *(f"| {label} | " + " | ".join(f"{imports[key][step] / MIB:.1f} MiB" for step in steps) + " |"
                        for label, key in (("TLS on demand (the relay)", "on_demand"), ("plain imports", "plain")))]
        growth = memory["growth"]
        lines += ["", "Growth with 16 cameras under mixed SOAP requests (wrk, 16 connections; the mix is in "
                  "`bench_memory.py`; the malformed ninth request is answered with a fault and counted as an "
                  "expected error). The growth during the warm-up is the WS-Security replay memory filling up: "
                  "it keeps up to 50,000 (user, nonce) pairs until their Created leaves the max_clock_skew window; "
                  "once full it stays full, and its table reaches its final size after about 120,000 mixed "
                  "requests, hence the warm-up length. Full, it holds "
                  f"{(growth['phases'][0]['rss_kib'] - growth['rss_after_start_kib']) / MIB:.1f} MiB here "
                  f"(~{(growth['phases'][0]['rss_kib'] - growth['rss_after_start_kib']) * 1024 / 50_000:.0f} bytes "
                  "per nonce).", "",
                  "| after | requests | req/s | errors (expected) | RSS |", "|---|---|---|---|---|",
                  f"| start | — | — | — | {growth['rss_after_start_kib'] / MIB:.1f} MiB |"]
        for phase in growth["phases"]:
            lines.append(f"| {phase['phase']} | {_n(phase['requests'])} | {_n(phase['requests'] / phase['seconds'])} "
                         f"| {_n(phase['errors'])} ({_n(phase['expected_errors'])}) | {phase['rss_kib'] / MIB:.1f} MiB |")
        self.target(f"RSS growth over {_n(growth['phases'][1]['requests'])} mixed requests after a "
                    f"{_n(growth['phases'][0]['requests'])}-request warm-up", "≤ 5 %", f"{growth['growth_percent']:+.1f} %",
                    growth["growth_percent"] <= 5.0)
        self.sections.append("\n".join(lines) + "\n")

    def _memory_note(self, memory: dict[str, Any]) -> str:
        one = next(row["rss_kib"] for row in memory["start"] if row["cameras"] == 1)
        sixteen = next(row["rss_kib"] for row in memory["start"] if row["cameras"] == 16)
        note = (f"{one / MIB:.1f} MiB of it with 1 camera; 15 more cameras add {(sixteen - one) / MIB:.1f} MiB. "
                "The imports alone take ")
        imports = memory.get("imports")
        if not imports:
            return note + "most of it"
        return note + f"{imports['on_demand']['+ atomrelay'] / MIB:.1f} MiB (TLS support not loaded)"

    # --- start-up ------------------------------------------------------------------------

    def startup(self) -> None:
        """Spawn to serving."""
        if self.failed("startup", "Start-up, 16 cameras, pip form", "≤ 0.5 s"):
            return
        startup = self.f["startup"]
        starts = startup["forms"][0]["starts"] if startup["forms"] else 0
        lines = ["## Start-up", "", f"{startup['cameras']} cameras; seconds from spawning the process (median, min–max of "
                 f"{starts} starts after one unmeasured start): first SOAP answer, all paths registered, systemd "
                 "READY=1.", "",
                 "| form | SOAP answers | all 32 paths | READY=1 | serving (later of the first two) | RSS |",
                 "|---|---|---|---|---|---|"]
        targets = {"pip": 0.5, "onedir": 1.0}
        for form in startup["forms"]:
            cells = [f"{form[k]['median']:.3f} s ({form[k]['min']:.3f}–{form[k]['max']:.3f})" if form[k] else "never"
                     for k in ("soap", "paths", "ready", "serving")]
            stale = " (bundle older than the sources)" if form.get("stale") else ""
            lines.append(f"| {form['form']}{stale} | {' | '.join(cells)} | {form['rss_kib'] / MIB:.1f} MiB |")
            serving = form["serving"]["median"]
            self.target(f"Start-up to serving, 16 cameras, {form['form']}{stale}", f"≤ {targets[form['form']]} s",
                        f"{serving:.3f} s", serving <= targets[form["form"]])
        if any(form.get("stale") for form in startup["forms"]):
            lines += ["", "The onedir bundle in `dist/` was built before the current sources, so its figures are for "
                      "that older code; `make dist` rebuilds it (`make bench` does not)."]
        if startup.get("onedir_missing"):
            lines += ["", f"The onedir bundle (`{startup['onedir_missing']}`) was not built, so it was not measured "
                      "here; `make dist` builds it. [packaging.md](packaging.md) measured 0.32 s to the first SOAP "
                      "answer for it with 1 camera (the pip form: 0.32 s there too)."]
            self.target("Start-up to serving, 16 cameras, onedir", "≤ 1.0 s", "not built in this run", None,
                        "see packaging.md: 0.32 s (1 camera, first SOAP answer)")
        self.sections.append("\n".join(lines) + "\n")

    # --- reconcile, events, snapshots --------------------------------------------------------

    def reconcile(self) -> None:
        """mediamtx restart to all paths back."""
        if self.failed("reconcile", "mediamtx restart → all 32 paths back", "≤ 2 s"):
            return
        r = self.f["reconcile"]
        times = ", ".join("never" if t is None else f"{t:.2f}" for t in r["seconds"])
        lines = ["## Reconcile", "", f"Fake mediamtx restarted {r['restarts']} times at different points of the "
                 f"relay's {r['poll_interval_s']:g} s poll cycle; seconds until all {r['paths']} paths were back: "
                 f"{times}."]
        if "max" in r:
            lines.append(f"Median {r['median']:.2f} s, max {r['max']:.2f} s.")
            self.target("mediamtx restart → all 32 paths back (worst of the restarts)", "≤ 2 s (one poll interval)",
                        f"max {r['max']:.2f} s, median {r['median']:.2f} s",
                        r["max"] <= r["poll_interval_s"] and not r["failed"],
                        "" if r["max"] <= r["poll_interval_s"] else
                        "detection waits for the next poll (up to one interval), then re-registering takes the rest")
        self.sections.append("\n".join(lines) + "\n")

    def events(self) -> None:
        """Webhook to PullMessages answer."""
        if self.failed("events", "Webhook → waiting PullMessages answered, p99", "≤ 20 ms"):
            return
        e = self.f["events"]
        lat = e["latency_ms"]
        self.sections.append(
            "## Events\n\n"
            f"Webhook POST (recognitionNotify) → the waiting PullMessages answered, {e['samples']} samples "
            f"({e['failures']} failed): p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}, "
            f"max {_ms(lat['max'])}.\n")
        self.target("Webhook → waiting PullMessages answered, p99", "≤ 20 ms", _ms(lat["p99"]),
                    lat["p99"] <= 20.0 and not e["failures"])

    def snapshot(self) -> None:
        """Snapshot proxy overhead and coalescing."""
        if self.failed("snapshot", "Snapshot proxy overhead; upstream requests saved", "(recorded)"):
            return
        s = self.f["snapshot"]
        c = s["coalescing"]
        burst, sustained = c["burst"], c["sustained"]
        saved = sustained["ok"] - sustained["upstream"]
        self.sections.append("\n".join([
            "## Snapshot proxy", "",
            "| fetch | p50 | p90 | p99 |", "|---|---|---|---|",
            *(f"| {label} | {_ms(s[key]['p50'])} | {_ms(s[key]['p90'])} | {_ms(s[key]['p99'])} |" for label, key in (
                ("simulated camera, direct", "direct_ms"),
                ("relay, upstream fetch (Digest auth + camera fetch)", "relay_fetch_ms"),
                ("relay, image under 1 s old (from memory)", "relay_cached_ms"))),
            "",
            f"Coalescing, the camera taking {c['camera_delay_s']:g} s per image: {burst['clients']} clients at the same "
            f"instant → {burst['upstream']} upstream request(s) ({burst['ok']} got the image). {sustained['clients']} "
            f"clients looping for {sustained['seconds']:g} s → {_n(sustained['ok'])} images served, "
            f"{sustained['upstream']} upstream requests ({_n(saved)} saved, p99 {_ms(sustained['latency_ms']['p99'])}).",
            ""]))
        self.target("Snapshot proxy overhead over a direct camera fetch (p50)", "recorded (no target)",
                    f"+{s['overhead_ms']:.2f} ms", None)
        self.target("Upstream requests, 32 concurrent clients", "recorded (no target)",
                    f"burst {burst['clients']} → {burst['upstream']}; {sustained['seconds']:g} s sustained "
                    f"{_n(sustained['ok'])} → {sustained['upstream']}", None)

    # --- profile ----------------------------------------------------------------------------

    def profile(self) -> None:
        """Top functions now and before the fixes."""
        if "profile" not in self.f:
            if "profile" in self.failures:
                self.sections.append(f"## Profile\n\nThe profile failed: {self.failures['profile']}\n")
            return
        path = BASELINE / "profile.json"
        before = {p["cameras"]: p for p in json.loads(path.read_text(encoding="utf-8"))["profiles"]} \
            if path.exists() else {}
        lines = ["## Profile of the worst path", "",
                 "py-spy (sampling, 1 kHz, from outside the process) on the relay answering authenticated "
                 "GetProfiles at 16 connections. Shares of the samples taken while the relay was busy; "
                 "\"self\" is time in the function itself (C code it calls included).", ""]
        for now in self.f["profile"]["profiles"]:
            if "skipped" in now:
                lines.append(f"{now['cameras']} camera(s): skipped: {now['skipped']}\n")
                continue
            old = before.get(now["cameras"])
            lines += [f"### {now['cameras']} camera{'s' if now['cameras'] > 1 else ''} "
                      f"({_n(now['rate'])} req/s while sampled"
                      + (f"; before the fixes {_n(old['rate'])} req/s)" if old else ")"), "",
                      "| # | now: self | | before: self | |", "|---|---|---|---|---|"]
            old_rows = old["self"] if old else []
            for index in range(10):
                cells = []
                for rows in (now["self"], old_rows):
                    if index < len(rows):
                        name, share = rows[index]
                        cells += [f"`{name}`", f"{share:.1f} %"]
                    else:
                        cells += ["", ""]
                lines.append(f"| {index + 1} | {' | '.join(cells)} |")
            lines.append("")
        self.sections.append("\n".join(lines))

    # --- the file ------------------------------------------------------------------------------

    def write(self, machine: dict[str, str], started: str, load: tuple[str, str], wall: float) -> str:
        """The whole results.md."""
        self.soap()
        self.breakdown()
        self.memory()
        self.startup()
        self.reconcile()
        self.events()
        self.snapshot()
        self.profile()
        met = sum(1 for row in self.summary if row[3] is True)
        missed = [row for row in self.summary if row[3] is False]
        head = [
            "# Benchmark results", "",
            f"Written by `make bench` ({Path(__file__).name}) on {started}; do not edit, run it again. "
            f"The whole run took {wall / 60:.1f} min. Targets are from issue 10; how each figure is measured is "
            "in the docstring of its script in this folder. The frozen binary's size and build time are in "
            "[packaging.md](packaging.md).", "",
            "## Machine", "",
            "| | |", "|---|---|",
            *(f"| {key} | {value} |" for key, value in machine.items()),
            f"| load average at start / end | {load[0]} / {load[1]} (anything above ~0 at the start means other work "
            "shared the 2 cores and lowered the figures) |", "",
            "## Figures against the targets", "",
            "| figure | target | measured | verdict | why, where missed |", "|---|---|---|---|---|",
            *(f"| {f} | {t} | {m} | {_verdict(ok)} | {note} |" for f, t, m, ok, note in self.summary), "",
        ]
        closing = ["## Closing note", "",
                   f"{met} of {sum(1 for row in self.summary if row[3] is not None)} targets met."]
        if missed:
            closing.append("Missed: " + "; ".join(f"{row[0]} ({row[2]} against {row[1]})" for row in missed) + ".")
        if self.failures:
            closing.append("Failed benchmarks: " + ", ".join(sorted(self.failures)) + ".")
        return "\n".join([*head, *self.sections, *closing, ""])


def main() -> int:
    """Run everything (or ``--only`` some) and write results.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = _load()
    git_start = _git()
    begin = time.monotonic()
    figures, failures = run_all(args.only)
    machine = common.machine()
    git_end = _git()
    machine["atomrelay"] += f" (git {git_start[0]})" if git_end[1] == git_start[1] else \
        f" (git {git_start[0]} at the start, {git_end[0]} at the end: atomrelay/ changed during the run)"
    text = Report(figures, failures).write(machine, started, (load_start, _load()), time.monotonic() - begin)
    args.output.write_text(text, encoding="utf-8")
    common.stderr(f"wrote {args.output.relative_to(common.ROOT) if args.output.is_relative_to(common.ROOT) else args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
