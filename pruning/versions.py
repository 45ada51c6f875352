"""Library versions recorded with every result, so numbers can be compared across runs."""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "accelerate", "lm_eval", "langgraph", "langchain-openai", "xllamacpp")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
