#!/usr/bin/env python3
"""The routes ferrule-gateway serves (--print-routes) equal the paths and methods of
docs/openapi.yaml, and the file is OpenAPI 3.1. Usage: check_openapi.py GATEWAY_BINARY OPENAPI_YAML"""
import re
import subprocess
import sys

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def spec_routes(path):
    routes, current, version = set(), None, None
    in_paths = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^openapi:\s*(\S+)", line)
            if m:
                version = m.group(1)
            if re.match(r"^paths:\s*$", line):
                in_paths = True
                continue
            if in_paths and re.match(r"^\S", line):
                in_paths = False
            if not in_paths:
                continue
            m = re.match(r"^  (/\S*):\s*$", line)
            if m:
                current = m.group(1)
                continue
            m = re.match(r"^    ([a-z]+):", line)
            if m and current and m.group(1) in METHODS:
                routes.add((m.group(1).upper(), current))
    return version, routes


def main():
    binary, spec = sys.argv[1], sys.argv[2]
    out = subprocess.run([binary, "--print-routes"], check=True, capture_output=True, text=True).stdout
    served = {tuple(line.split(" ", 1)) for line in out.splitlines() if line.strip()}
    version, documented = spec_routes(spec)
    ok = True
    if version != "3.1.0":
        print(f"{spec}: openapi is {version!r}, not 3.1.0")
        ok = False
    for method, path in sorted(served - documented):
        print(f"served but not in {spec}: {method} {path}")
        ok = False
    for method, path in sorted(documented - served):
        print(f"in {spec} but not served: {method} {path}")
        ok = False
    if not served:
        print("the gateway printed no routes")
        ok = False
    print(f"{len(served)} routes served, {len(documented)} documented")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
