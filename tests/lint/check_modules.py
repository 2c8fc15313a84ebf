#!/usr/bin/env python3
"""Checks the module rules of docs/architecture.md on the source tree:
a module includes only the public headers of the modules it may use, and only the outside
libraries it may use. Prints every violation as file:line and exits 1 if there is any."""
import os
import re
import sys

# module -> (modules it may use, outside headers it may include)
MODULES = {
    "common":      (set(),                                      {"yaml.h", "jansson.h", "munge.h"}),
    "data":        ({"common"},                                 {"jansson.h"}),
    "collectives": (set(),                                      {"mpi.h", "nccl.h", "cuda_runtime.h", "cuda_runtime_api.h", "cuda_bf16.h"}),
    "checkpoints": (set(),                                      {"mpi.h", "hdf5.h"}),
    "worker":      ({"common", "data", "collectives", "checkpoints"},   {"mpi.h", "cblas.h", "oneapi/dnnl/dnnl.h", "omp.h", "cuda_runtime.h", "cublas_v2.h", "cublasLt.h", "cuda_bf16.h"}),
    "scheduler":   ({"common", "data", "checkpoints"},                  {"sqlite3.h", "jansson.h", "yaml.h"}),
}
PUBLIC = {
    "common": "common.h",
    "data": "data.h",
    "collectives": "collectives.h",
    "checkpoints": "checkpoints.h",
}
# Outside libraries that belong to some module: including one elsewhere breaks the layering.
OUTSIDE = {h for _, hs in MODULES.values() for h in hs}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def check(top):
    bad = []
    for module, (may_use, may_include) in MODULES.items():
        folder = os.path.join(top, module)
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                if not name.endswith((".c", ".h", ".cu", ".cuh")):
                    continue
                path = os.path.join(root, name)
                rel = os.path.relpath(path, top)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        header = m.group(2)
                        parts = header.split("/")
                        if m.group(1) == '"' and len(parts) == 2 and parts[0] in MODULES:
                            other, file = parts
                            if other == module:
                                continue
                            if other not in may_use:
                                bad.append(f"{rel}:{lineno}: {module}/ may not use {other}/ (includes {header})")
                            elif PUBLIC.get(other) != file:
                                bad.append(f"{rel}:{lineno}: {header} is not {other}/'s public header "
                                           f"({other}/{PUBLIC.get(other)})")
                        elif header in OUTSIDE and header not in may_include:
                            bad.append(f"{rel}:{lineno}: {module}/ may not include <{header}>")
    return bad


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    bad = check(os.path.abspath(top))
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} module rule violation(s); see docs/architecture.md")
        return 1
    print("module rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
