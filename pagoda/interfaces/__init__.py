"""Public contracts for plugin authors: models, attention backends, quantization methods, tool
parsers, reasoning parsers and guided-decoding backends."""

from pagoda.interfaces.attention import AttentionBackend
from pagoda.interfaces.guided import (
    CompiledConstraint,
    GuidedBackend,
    GuidedDecodingParams,
    Matcher,
    UnsupportedConstraintError,
    allocate_token_bitmask,
    apply_token_bitmask,
)
from pagoda.interfaces.messages import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
    make_tool_call_id,
)
from pagoda.interfaces.model import CausalLM, ModelContext
from pagoda.interfaces.quant import GGUFBlocks, QuantMethod
from pagoda.interfaces.reasoning import ParsedReasoning, ReasoningParser
from pagoda.interfaces.tool_parser import ParsedToolCall, ParsedToolCalls, ToolParser
from pagoda.layers.attention_metadata import AttentionMetadata
from pagoda.layers.linear import LinearMethod

__all__ = [
    "AttentionBackend",
    "AttentionMetadata",
    "CausalLM",
    "CompiledConstraint",
    "DeltaFunctionCall",
    "DeltaMessage",
    "DeltaToolCall",
    "ExtractedToolCallInformation",
    "FunctionCall",
    "GGUFBlocks",
    "GuidedBackend",
    "GuidedDecodingParams",
    "LinearMethod",
    "Matcher",
    "ModelContext",
    "ParsedReasoning",
    "ParsedToolCall",
    "ParsedToolCalls",
    "QuantMethod",
    "ReasoningParser",
    "ToolCall",
    "ToolParser",
    "UnsupportedConstraintError",
    "allocate_token_bitmask",
    "apply_token_bitmask",
    "make_tool_call_id",
]
