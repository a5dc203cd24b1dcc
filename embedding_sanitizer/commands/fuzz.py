"""``python -m embedding_sanitizer fuzz --n 10000``: fuzz the core API and print what broke.

Prints the counts of crashes (exceptions other than the documented clear errors), silent
no-ops (an obfuscated unsafe prompt left unedited without a note while its plain spelling is
edited) and invariant violations, then up to ``--show`` findings with the case number to
replay (``--seed S --only CASE``). Exits 1 when anything was found. See ``embedding_sanitizer.fuzz``.
"""
from __future__ import annotations

import json
import random
import sys
import time


def configure(parser) -> None:
    parser.add_argument("--n", type=int, default=10000, help="number of cases (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed; case k of seed S is always the same input")
    parser.add_argument("--kinds", default="", help="comma-separated case kinds to draw from "
                                                     "(tensor, prompt, obfuscated, weights, heatmap; default all)")
    parser.add_argument("--only", type=int, default=None, help="replay one case number and show its traceback")
    parser.add_argument("--no-minilm", action="store_true", help="tiny random encoders only (no bundled encoder)")
    parser.add_argument("--show", type=int, default=20, help="findings to print in full")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def run(args) -> int:
    from .. import fuzz

    mix = dict(fuzz.DEFAULT_MIX)
    if args.kinds:
        chosen = [k.strip() for k in args.kinds.split(",") if k.strip()]
        unknown = [k for k in chosen if k not in fuzz.KINDS]
        if unknown:
            raise ValueError(f"--kinds: unknown kind(s) {unknown}; known: {list(fuzz.KINDS)}")
        mix = {k: v for k, v in mix.items() if k in chosen}
    import torch

    torch.set_num_threads(args.threads)  # small tensors: more threads only contend
    started = time.time()
    fuzzer = fuzz.Fuzzer(use_minilm=not args.no_minilm)
    if args.only is not None:
        rng = random.Random(f"{args.seed}:{args.only}")
        kinds, weights = list(mix), list(mix.values())
        kind = rng.choices(kinds, weights)[0]
        print(f"case {args.only} (seed {args.seed}): {kind}")
        fuzzer.run_case(kind, rng)
        print("passed")
        return 0

    def progress(case, tally):
        if (case + 1) % 1000 == 0:
            print(f"  {case + 1} cases, {tally.inputs} inputs, {len(tally.findings)} finding(s), "
                  f"{time.time() - started:.0f} s", file=sys.stderr, flush=True)

    tally = fuzz.run(args.n, args.seed, mix, fuzzer=fuzzer, progress=progress)
    summary = tally.summary()
    summary["seconds"] = round(time.time() - started, 1)
    summary["seed"] = args.seed
    summary.update(fuzzer.stats)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"fuzz: {tally.cases} cases, {tally.inputs} inputs (seed {args.seed}, {summary['seconds']} s); "
              f"{tally.clear_errors} documented clear errors")
        print(f"crashes: {summary['crashes']}")
        print(f"silent no-ops: {summary['silent_noops']}")
        print(f"invariant violations: {summary['invariant_violations']}")
        print("cases by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items())))
        if fuzzer.stats.get("obfuscated_plain_edited"):
            print(f"obfuscated prompts whose plain spelling is edited: {fuzzer.stats['obfuscated_plain_edited']}, "
                  f"edited too: {fuzzer.stats.get('obfuscated_edited_too', 0)}")
    for finding in tally.findings[:args.show]:
        print(f"- case {finding.case} [{finding.kind}] {finding.category}: {finding.message}")
        if finding.detail:
            print("    " + finding.detail.strip().replace("\n", "\n    "))
    return 1 if tally.findings else 0
