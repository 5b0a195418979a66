#!/bin/sh
# make check entry for the black-box scenarios (real dockerd, real containers).
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/test_sandboxd.py"
