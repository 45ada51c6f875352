"""Errors that mean "bad input": the CLI prints them as one line and exits 2."""
from agents.chat import AgentError
from agents.prompting import PromptError
from agents.local_server import LocalServerError
from commands.search import RunNotFoundError
from deploy.llamacpp_runtime import LlamaCppError
from distributed.ray_pool import WorkersLostError
from pruning.families import UnsupportedModelError
from pruning.budget import BudgetError
from pruning.data import DataUnavailableError
from pruning.checkpoint import CorruptCheckpointError, DiskFullError
from pruning.loading import ModelLoadError
from pruning.placement import PlacementError

USER_ERRORS = (PlacementError, AgentError, PromptError, RunNotFoundError, ModelLoadError, BudgetError, DataUnavailableError, UnsupportedModelError,
               LlamaCppError, LocalServerError, WorkersLostError, CorruptCheckpointError, DiskFullError, ValueError,
               FileNotFoundError)
