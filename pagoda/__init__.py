"""pagoda: an LLM inference and serving engine."""

from pagoda.hookspecs import hookimpl
from pagoda.llm import LLM
from pagoda.outputs import CompletionOutput, Logprob, RequestOutput
from pagoda.sampling_params import SamplingParams

__all__ = ["LLM", "CompletionOutput", "Logprob", "RequestOutput", "SamplingParams", "hookimpl"]
__version__ = "0.1.0"
