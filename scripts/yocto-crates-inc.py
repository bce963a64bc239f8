#!/usr/bin/env python3
"""Write yocto/meta-onfh/recipes-medical/onfh-edge/onfh-edge-crates.inc from Cargo.lock.

The output is what oe-core's `bitbake -c update_crates onfh-edge`
(cargo-update-recipe-crates.bbclass) writes: every crates.io package of Cargo.lock as a
`crate://` SRC_URI entry named `<name>-<version>`, then its sha256 checksum. Cargo.lock
lists the crates of every feature (CUDA included), so one file serves both builds.

    scripts/yocto-crates-inc.py           # rewrite the .inc
    scripts/yocto-crates-inc.py --check   # exit 1 and say what differs if it is stale

Needs Python 3.11 (tomllib) and nothing else.
"""

import argparse
import difflib
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = ROOT / "Cargo.lock"
INC = ROOT / "yocto/meta-onfh/recipes-medical/onfh-edge/onfh-edge-crates.inc"
RECIPE = "onfh-edge"


def render(lock_path: pathlib.Path) -> str:
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    crates = [p for p in lock.get("package", []) if "crates.io" in p.get("source", "")]
    if not crates:
        raise SystemExit(f"{lock_path}: no crates.io packages")
    out = [
        "# Generated from Cargo.lock by scripts/yocto-crates-inc.py, in the layout of oe-core's",
        f"# `bitbake -c update_crates {RECIPE}` (tests/packaging.rs checks it is current).",
        "",
        f"# from {lock_path.relative_to(ROOT)}",
        "# The leading space and line continuations are that layout's, one crate per line:",
        "# nooelint: oelint.vars.inconspaces, oelint.vars.notneededspace",
        'SRC_URI += " \\',
    ]
    sums = []
    for p in crates:
        key = f"{p['name']}-{p['version']}"
        out.append(f"    crate://crates.io/{p['name']}/{p['version']};name={key} \\")
        if "checksum" in p:
            sums.append(f'SRC_URI[{key}.sha256sum] = "{p["checksum"]}"')
    out.append('"')
    out.append("")
    out.extend(sums)
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    want = render(LOCK)
    if args.check:
        have = INC.read_text() if INC.exists() else ""
        if have == want:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                have.splitlines(keepends=True),
                want.splitlines(keepends=True),
                str(INC.relative_to(ROOT)),
                "from Cargo.lock",
                n=0,
            )
        )
        print(f"{INC.relative_to(ROOT)} is stale: run scripts/yocto-crates-inc.py", file=sys.stderr)
        return 1
    INC.parent.mkdir(parents=True, exist_ok=True)
    INC.write_text(want)
    print(f"wrote {INC.relative_to(ROOT)} ({len(want.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
