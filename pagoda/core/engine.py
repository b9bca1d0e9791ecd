"""The engine: EngineCore.step() = schedule -> execute -> update; LLMEngine adds requests,
tokenization, detokenization and vLLM-shaped outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from pagoda.config import EngineConfig
from pagoda.core.detokenizer import IncrementalDetokenizer
from pagoda.core.executor import InProcessExecutor
from pagoda.core.guided import GuidedDecoding
from pagoda.core.model_runner import LaunchedStep, ModelRunnerOutput
from pagoda.core.pooling_requests import (
    check_task,
    make_pooling_request,
    pooling_output,
    tokenize_pooling_prompt,
)
from pagoda.core.request import Request, RequestStatus
from pagoda.core.sampler import SamplingRow
from pagoda.core.scheduler import Scheduler, SchedulerOutput
from pagoda.core.tokenizer import eos_token_ids, load_tokenizer
from pagoda.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from pagoda.plugin_manager import PluginManager, get_plugin_manager
from pagoda.pooling_params import PoolingParams, PoolingRequestOutput
from pagoda.sampling_params import RequestOutputKind, SamplingParams

logger = logging.getLogger("pagoda")

PromptInput = str | dict[str, Any]


@dataclass(slots=True)
class ParentRequest:
    """A user request: its ``n`` sequences (child requests) and its prompt."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: list[Request] = field(default_factory=list)
    sent_prompt_logprobs: bool = False

    @property
    def finished(self) -> bool:
        return all(c.status.finished for c in self.children)


def needs_host_tokens(request: Request) -> bool:
    """Whether the request's next step needs its sampled tokens on the host first: a
    grammar matcher (now or after the reasoning), penalties, or min_tokens still masking
    EOS all read them when the next step's logits are processed."""
    p = request.sampling_params
    return bool(
        request.sampling_row.matcher is not None
        or request.pending_matcher is not None
        or request.num_output_tokens < p.min_tokens
        or p.repetition_penalty != 1.0
        or p.presence_penalty
        or p.frequency_penalty
    )


class LLMEngine:
    """Owns the tokenizer, the scheduler and the executor; turns requests into outputs."""

    def __init__(self, config: EngineConfig, plugins: PluginManager | None = None) -> None:
        self.config = config.finalize()
        self.plugins = plugins or get_plugin_manager()
        self.plugins.hook.configure.call_historic(kwargs={"config": self.config})
        self.tokenizer = load_tokenizer(self.config.model)
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.config.model)
        self.executor = InProcessExecutor(self.config, self.plugins)
        self.scheduler = Scheduler(
            self.config.scheduler, self.config.cache, self.executor.num_blocks
        )
        self.device = self.config.device.torch_device
        self.vocab_size = int(self.config.model.hf_config.vocab_size)
        reasoning = self.config.decoding.reasoning_parser
        self.reasoner = (
            self.plugins.reasoning_parsers.get(reasoning)(self.tokenizer) if reasoning else None
        )
        self.guided = GuidedDecoding(
            self.plugins,
            self.tokenizer,
            self.vocab_size,
            self.eos_token_ids,
            self.config.decoding.guided_decoding_backend,
        )
        self.parents: dict[str, ParentRequest] = {}
        self.requests: dict[str, Request] = {}
        self.parent_of: dict[str, ParentRequest] = {}
        self.async_scheduling = self.config.scheduler.async_scheduling_on(self.device)
        self.in_flight: LaunchedStep | None = None  # async scheduling: the step not read yet

    @property
    def max_model_len(self) -> int:
        return int(self.config.model.max_model_len or 0)

    def tokenize_prompt(self, prompt: PromptInput) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, list(self.tokenizer.encode(prompt))
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            return prompt.get("prompt"), [int(t) for t in prompt["prompt_token_ids"]]
        if isinstance(prompt, dict) and "prompt" in prompt:
            return prompt["prompt"], list(self.tokenizer.encode(prompt["prompt"]))
        raise TypeError(
            "a prompt is a string, {'prompt': str} or {'prompt_token_ids': [int, ...]}, "
            f"not {type(prompt).__name__}"
        )

    def validate_prompt(self, token_ids: list[int]) -> None:
        if not token_ids:
            raise ValueError("the prompt is empty")
        if len(token_ids) > self.max_model_len:
            raise ValueError(
                f"This model's maximum context length is {self.max_model_len} tokens, "
                f"your request has {len(token_ids)} input tokens"
            )
        capacity = self.executor.num_blocks * self.config.cache.block_size
        if len(token_ids) > capacity:
            raise ValueError(
                f"the prompt ({len(token_ids)} tokens) does not fit in the KV cache "
                f"({capacity} tokens); raise --kv-cache-memory"
            )
        bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt token id {bad[0]} is outside the vocabulary (size {self.vocab_size})"
            )

    def add_request(
        self,
        request_id: str,
        prompt: PromptInput,
        params: SamplingParams | PoolingParams,
        arrival_time: float | None = None,
    ) -> None:
        """Tokenize, validate and queue a request (``n`` sequences); with
        :class:`PoolingParams`, a pooling request (its result comes from the pooler)."""
        if request_id in self.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        if isinstance(params, PoolingParams):
            self._add_pooling_request(request_id, prompt, params, arrival_time)
            return
        task = self.config.model.task
        if task != "generate":
            raise ValueError(
                f"this server runs the {task!r} task; start it with --task generate "
                "to serve completions"
            )
        text, token_ids = self.tokenize_prompt(prompt)
        self.validate_prompt(token_ids)
        params.verify_vocab(self.vocab_size)
        # Compiled here unless the caller compiled it off the step loop already (then cached).
        constraint = self.guided.compile(params.guided_decoding) if params.guided_decoding else None
        arrival = arrival_time if arrival_time is not None else time.monotonic()
        parent = ParentRequest(request_id, text, token_ids)
        for i in range(params.n):
            child_params = params.child_params(i) if params.n > 1 else params
            child_id = request_id if params.n == 1 else f"{i}_{request_id}"
            child = self._make_request(child_id, text, token_ids, child_params, arrival)
            if constraint is not None:
                self._attach_matcher(child, constraint.new_matcher())
            parent.children.append(child)
        self.parents[request_id] = parent
        for child in parent.children:
            self.requests[child.request_id] = child
            self.parent_of[child.request_id] = parent
            self.scheduler.add_request(child)

    def _add_pooling_request(
        self,
        request_id: str,
        prompt: PromptInput,
        params: PoolingParams,
        arrival_time: float | None,
    ) -> None:
        task = check_task(self.config.model.task, params)
        text, token_ids, types = tokenize_pooling_prompt(
            self.tokenizer, prompt, params.truncate_prompt_tokens, self.max_model_len
        )
        self.validate_prompt(token_ids)
        arrival = arrival_time if arrival_time is not None else time.monotonic()
        request = make_pooling_request(
            request_id, text, token_ids, types, params, task, arrival, self.max_model_len
        )
        parent = ParentRequest(request_id, text, token_ids, [request])
        self.parents[request_id] = parent
        self.requests[request_id] = request
        self.parent_of[request_id] = parent
        self.scheduler.add_request(request)

    def _pooling_outputs(self, result: ModelRunnerOutput) -> list[PoolingRequestOutput]:
        """Finish each pooled request (its blocks are freed now) and build its output."""
        outputs = []
        for rid, data in result.pooler_output.items():
            request = self.requests[rid]
            self.scheduler.finish(request, RequestStatus.FINISHED_STOPPED)
            self.parents.pop(rid, None)
            self._forget(request)
            outputs.append(pooling_output(request, data))
        return outputs

    def _attach_matcher(self, request: Request, matcher: Any) -> None:
        """Constrain the request now, or, with a reasoning parser, once its reasoning ends
        (the prompt may already end it, e.g. a template that closes an empty think block)."""
        if self.reasoner is None or self.reasoner.is_reasoning_end(request.prompt_token_ids):
            request.sampling_row.matcher = matcher
        else:
            request.pending_matcher = matcher

    def _make_request(
        self,
        request_id: str,
        prompt: str | None,
        token_ids: list[int],
        params: SamplingParams,
        arrival: float,
    ) -> Request:
        request = Request(
            request_id,
            token_ids,
            params,
            self.eos_token_ids,
            arrival,
            self.max_model_len,
            prompt=prompt,
        )
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        request.sampling_row = SamplingRow(
            params,
            request.prompt_token_ids,
            request.output_token_ids,
            generator,
            self.eos_token_ids,
        )
        request.detokenizer = IncrementalDetokenizer(
            self.tokenizer,
            token_ids,
            stop=params.stop,
            include_stop_str_in_output=params.include_stop_str_in_output,
            skip_special_tokens=params.skip_special_tokens,
            spaces_between_special_tokens=params.spaces_between_special_tokens,
        )
        return request

    def abort_request(self, request_ids: str | list[str]) -> None:
        """Stop requests now and free their KV blocks."""
        for rid in [request_ids] if isinstance(request_ids, str) else request_ids:
            parent = self.parents.pop(rid, None)
            if parent is None:
                continue
            for child in parent.children:
                if not child.status.finished:
                    self.scheduler.finish(child, RequestStatus.FINISHED_ABORTED)
                self._forget(child)

    def _forget(self, request: Request) -> None:
        self.requests.pop(request.request_id, None)
        self.parent_of.pop(request.request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.parents)

    def step(self) -> list[RequestOutput | PoolingRequestOutput]:
        """Run one engine step; return outputs of the requests that changed.

        With async scheduling a step is launched before the previous step's tokens are read
        back, so the host schedules and stages step n+1 while the device runs step n, and
        the outputs returned are step n's. A step with a request that needs its tokens on
        the host before its next step (:func:`needs_host_tokens`) is read back at once."""
        sched = self.scheduler.schedule()
        launched = None if sched.is_empty else self._launch(sched)
        previous, self.in_flight = self.in_flight, None
        outputs = self._collect(previous) if previous is not None else []
        if launched is not None:
            if self.async_scheduling and not self._needs_host(launched):
                self.in_flight = launched
            else:
                outputs += self._collect(launched)
        return outputs

    def _launch(self, sched: SchedulerOutput) -> LaunchedStep:
        step = self.executor.launch_model(sched)
        for s in sched.scheduled:
            s.request.num_computed_tokens += s.num_new_tokens
        for request in step.requests:
            request.num_pending_tokens += 1
        return step

    @staticmethod
    def _needs_host(step: LaunchedStep) -> bool:
        out = step.output
        return bool(out.pooler_output or out.prompt_logprobs) or any(
            needs_host_tokens(r) for r in step.requests
        )

    def _collect(self, step: LaunchedStep) -> list[RequestOutput | PoolingRequestOutput]:
        """Read a launched step's tokens back and turn them into outputs."""
        result = step.result()
        for request in step.requests:
            request.num_pending_tokens -= 1
        touched = self._apply_output(result, step.requests)
        outputs = [self._make_output(p) for p in touched]
        return [o for o in outputs if o is not None] + self._pooling_outputs(result)

    def _apply_output(
        self, result: ModelRunnerOutput, requests: list[Request]
    ) -> list[ParentRequest]:
        touched: dict[str, ParentRequest] = {}
        for rid, positions in result.prompt_logprobs.items():
            request = self.requests[rid]
            assert request.prompt_logprobs is not None
            request.prompt_logprobs.extend(self._decode_logprobs(request, p) for p in positions)
        now = time.monotonic()
        for request, token, logprobs in zip(
            requests, result.sampled_token_ids, result.logprobs, strict=True
        ):
            rid = request.request_id
            if request.status.finished or self.requests.get(rid) is not request:
                continue  # finished (or aborted) while this step was in flight
            if request.first_token_time is None:
                request.first_token_time = now
            request.append_output_token(token)
            if logprobs is not None and request.logprobs is not None:
                request.logprobs.append(self._decode_logprobs(request, logprobs))
                request.cumulative_logprob += logprobs[token].logprob
            matcher = request.sampling_row.matcher
            if matcher is not None and not matcher.accept_token(token):
                logger.warning("request %s: the grammar rejected sampled token %d", rid, token)
            if (
                request.pending_matcher is not None
                and self.reasoner is not None
                and self.reasoner.is_reasoning_end(request.output_token_ids)
            ):
                # The token that closed the reasoning is not part of the constrained text.
                request.sampling_row.matcher, request.pending_matcher = (
                    request.pending_matcher,
                    None,
                )
            self._check_stop(request, token)
            parent = self.parent_of[rid]
            touched[parent.request_id] = parent
        return list(touched.values())

    def _decode_logprobs(self, request: Request, position: PositionLogprobs) -> PositionLogprobs:
        for token_id, lp in position.items():
            lp.decoded_token = request.detokenizer.decode_token(token_id)
        return position

    def _check_stop(self, request: Request, token: int) -> None:
        params = request.sampling_params
        stop_str = request.detokenizer.update([token])
        status = None
        matcher = request.sampling_row.matcher
        if matcher is not None and matcher.is_terminated():
            status = RequestStatus.FINISHED_STOPPED  # the grammar is complete
        elif request.num_output_tokens >= params.min_tokens:
            if not params.ignore_eos and token in self.eos_token_ids:
                status = RequestStatus.FINISHED_STOPPED
            elif token in params.stop_token_ids:
                status, request.stop_reason = RequestStatus.FINISHED_STOPPED, token
            elif stop_str is not None:
                status, request.stop_reason = RequestStatus.FINISHED_STOPPED, stop_str
        if status is None and (
            (params.max_tokens is not None and request.num_output_tokens >= params.max_tokens)
            or request.num_tokens >= request.max_model_len
            # Its next token would need more slots than the whole KV cache has: no amount of
            # preemption can make room, so stop here rather than retry forever.
            or request.num_tokens > self.executor.num_blocks * self.config.cache.block_size
        ):
            status = RequestStatus.FINISHED_LENGTH
        if status is not None:
            self.scheduler.finish(request, status)

    def _make_output(self, parent: ParentRequest) -> RequestOutput | None:
        """The parent's output per its children's output kind (None: nothing to send yet)."""
        finished = parent.finished
        kind = parent.children[0].sampling_params.output_kind
        if kind is RequestOutputKind.FINAL_ONLY and not finished:
            return None
        delta = kind is RequestOutputKind.DELTA
        outputs = []
        for i, child in enumerate(parent.children):
            done = child.status.finished
            start = child.num_sent_tokens if delta else 0
            child.num_sent_tokens = child.num_output_tokens
            logprobs_on = child.logprobs is not None
            outputs.append(
                CompletionOutput(
                    index=i,
                    text=child.detokenizer.get_next_output_text(done, delta=delta),
                    token_ids=child.output_token_ids[start:],
                    cumulative_logprob=child.cumulative_logprob if logprobs_on else None,
                    logprobs=child.logprobs[start:] if logprobs_on else None,
                    finish_reason=child.finish_reason,
                    stop_reason=child.stop_reason,
                )
            )
        first = parent.children[0]
        prompt_logprobs = first.prompt_logprobs
        if delta:
            prompt_logprobs = None if parent.sent_prompt_logprobs else prompt_logprobs
            parent.sent_prompt_logprobs = True
        metrics: dict[str, float] = {}
        if finished:
            self.parents.pop(parent.request_id, None)
            for child in parent.children:
                self._forget(child)
            metrics = {"arrival_time": first.arrival_time, "finished_time": time.monotonic()}
            if first.first_scheduled_time is not None:
                metrics["first_scheduled_time"] = first.first_scheduled_time
            if first.first_token_time is not None:
                metrics["first_token_time"] = first.first_token_time
        return RequestOutput(
            request_id=parent.request_id,
            prompt=parent.prompt,
            prompt_token_ids=parent.prompt_token_ids,
            prompt_logprobs=prompt_logprobs,
            outputs=outputs,
            finished=finished,
            num_cached_tokens=max(first.num_cached_tokens, 0),
            metrics=metrics,
        )
