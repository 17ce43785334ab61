"""Known-vulnerability audit without network: the installed packages against a local copy of an OSV
advisory database (a checkout of github.com/pypa/advisory-database, or any folder of OSV YAML/JSON files).

    python scripts/audit_offline.py --osv advisory-database/vulns [--python .venv/bin/python]

For air-gapped machines, where ``scripts/audit.sh`` (pip-audit) cannot reach pypi.org or osv.dev.
Withdrawn advisories are skipped, as pip-audit skips them. Exit status 1 when anything is affected.
The audit is only as new as the copy of the database: say its date when you quote the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


def installed(python: str) -> dict[str, Version]:
    freeze = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                            check=True).stdout
    found = {}
    for line in freeze.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = Version(version.split("+")[0])  # 2.13.0+cpu is 2.13.0
    return found


def affects(affected: dict, version: Version) -> bool:
    if str(version) in affected.get("versions", []):
        return True
    for span in affected.get("ranges", []):
        if span.get("type") != "ECOSYSTEM":
            continue
        start = None
        for event in span["events"]:  # OSV: introduced / fixed (exclusive) / last_affected (inclusive)
            try:
                if "introduced" in event:
                    start = Version(event["introduced"])
                    continue
                if start is not None and "fixed" in event and start <= version < Version(event["fixed"]):
                    return True
                if start is not None and "last_affected" in event and start <= version <= Version(
                        event["last_affected"]):
                    return True
                start = None if "fixed" in event or "last_affected" in event else start
            except InvalidVersion:
                continue
        if start is not None and version >= start:  # introduced and never fixed
            return True
    return False


def audit(packages: dict[str, Version], osv_dir: Path) -> list[dict]:
    findings = []
    for path in sorted(osv_dir.rglob("*")):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        advisory = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        if not isinstance(advisory, dict) or advisory.get("withdrawn"):
            continue
        for affected in advisory.get("affected", []):
            package = affected.get("package", {})
            name = canonicalize_name(package.get("name", ""))
            if package.get("ecosystem") == "PyPI" and name in packages and affects(affected, packages[name]):
                findings.append({"package": name, "version": str(packages[name]), "id": advisory["id"],
                                 "aliases": advisory.get("aliases", []),
                                 "summary": (advisory.get("summary") or advisory.get("details", ""))[:120]})
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--osv", type=Path, required=True, help="folder of OSV advisories (YAML or JSON)")
    parser.add_argument("--python", default=sys.executable, help="the environment to audit (its python)")
    args = parser.parse_args()
    if not args.osv.is_dir():
        parser.error(f"{args.osv} is not a folder: clone github.com/pypa/advisory-database and pass its vulns/")
    packages = installed(args.python)
    findings = audit(packages, args.osv)
    for f in findings:
        print(f"{f['package']} {f['version']}: {f['id']} {' '.join(f['aliases'])} {f['summary']}")
    print(f"{len(packages)} packages audited against {args.osv}: {len(findings)} known vulnerabilities")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
