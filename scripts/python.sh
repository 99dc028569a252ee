# Sourced by the launchers (torchrun.sh, srun.sh): PYTHON is $PYTHON when set, else the project's
# .venv when there is one, else python3.
if [ -z "${PYTHON:-}" ]; then
    _root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -x "$_root/.venv/bin/python" ]; then PYTHON="$_root/.venv/bin/python"; else PYTHON=python3; fi
    unset _root
fi
