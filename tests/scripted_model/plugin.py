"""A test-only model plugin that ignores its input and writes a scripted text.

The checkpoint's ``config.json`` names ``"architectures": ["ScriptedForCausalLM"]`` and a
``script_file``: a JSON list of token ids (the text, tokenized with the real tokenizer, then
EOS). Whatever the prompt, the k-th generated token is ``script[k]`` (the last id once the
script is used up), so a test sees exactly what the template, the detokenizer, the parsers
and the streaming code make of a known model output. The file is read at every step, so a
test may change the script between requests without restarting the server.

The model holds no state between steps. It finds k with its one attention layer: every key
is zero (uniform attention), and the value is 1 for prompt tokens (those of prefill chunks)
and 0 for generated ones (decode tokens), so at position p the output is
``prompt_len / (p + 1)``; then ``k = p + 1 - prompt_len``. Serve it with
``--no-enable-prefix-caching``: a cached block of generated tokens reused as part of a later
prompt would count as generated. (A request preempted and recomputed would count its
generated tokens as prompt; tests never preempt.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from pagoda.hookspecs import Register, hookimpl
from pagoda.interfaces import ModelContext
from pagoda.layers.attention import Attention
from pagoda.layers.forward_context import get_forward_context

HEAD_DIM = 16


class ScriptedForCausalLM(nn.Module):
    """Satisfies :class:`pagoda.interfaces.CausalLM`; its "hidden state" is k."""

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        self.vocab_size = int(ctx.hf_config.vocab_size)
        self.script_file = Path(ctx.hf_config.script_file)
        self.dtype = ctx.dtype
        self.attn = Attention(1, HEAD_DIM, 1.0, 1)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        num_decodes = get_forward_context().meta.num_decodes
        n = input_ids.shape[0]
        zeros = torch.zeros(n, HEAD_DIM, dtype=self.dtype, device=input_ids.device)
        is_prompt = zeros.clone()
        is_prompt[num_decodes:, 0] = 1.0
        fraction = self.attn(zeros, zeros, is_prompt)[:, 0].double()
        seen = positions.double() + 1
        prompt_len = torch.round(fraction * seen)
        return (seen - prompt_len).float().unsqueeze(1)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        script = torch.tensor(json.loads(self.script_file.read_text()), dtype=torch.long)
        k = hidden_states[:, 0].round().long().clamp(0, len(script) - 1)
        logits = torch.full(
            (hidden_states.shape[0], self.vocab_size), -1e4, device=hidden_states.device
        )
        logits[torch.arange(len(k)), script[k].to(logits.device)] = 0.0
        return logits

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return set()


@hookimpl
def register_models(register: Register) -> None:
    register("ScriptedForCausalLM", ScriptedForCausalLM, tasks=("generate",))
