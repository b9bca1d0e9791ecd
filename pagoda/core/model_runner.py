"""ModelRunner: builds the model from the registry, sizes the KV cache, and runs steps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from pagoda.config import EngineConfig, is_gguf
from pagoda.core import piecewise_graphs
from pagoda.core.cpu_memory import keep_freed_cpu_memory
from pagoda.core.cuda_graphs import CUDAGraphRunner, supports_graphs
from pagoda.core.device_inputs import DeviceInputs, PreviousSample, fill_pending, host_to_device
from pagoda.core.loader import load_weights
from pagoda.core.piecewise_graphs import PiecewiseGraphRunner
from pagoda.core.pooler import Pooler
from pagoda.core.request import Request
from pagoda.core.sampler import Sampler, compute_prompt_logprobs
from pagoda.core.scheduler import SchedulerOutput
from pagoda.interfaces import AttentionMetadata, ModelContext, QuantMethod
from pagoda.layers.attention import Attention
from pagoda.layers.forward_context import ForwardContext, forward_context
from pagoda.layers.linear import UnquantizedLinearMethod
from pagoda.outputs import PositionLogprobs
from pagoda.plugin_manager import PluginManager

logger = logging.getLogger("pagoda")


@dataclass(slots=True)
class ModelRunnerOutput:
    """Per step: the sampled token (and its logprobs) of each request that reached its end,
    in the order of :attr:`LaunchedStep.requests`, plus prompt logprobs of the chunks that
    asked for them."""

    sampled_token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs | None] = field(default_factory=list)
    prompt_logprobs: dict[str, list[PositionLogprobs]] = field(default_factory=dict)
    # Pooling steps: request id -> its pooled result (core.pooler).
    pooler_output: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(slots=True)
class LaunchedStep:
    """A step whose forward pass and sampling are queued on the device. ``requests`` are the
    rows that sampled a token, in order; :meth:`result` waits for their tokens (copied to
    pinned host memory behind the sampling) and returns the whole output."""

    output: ModelRunnerOutput
    requests: list[Request] = field(default_factory=list)
    host_sampled: torch.Tensor | None = None
    done: torch.cuda.Event | None = None

    def result(self) -> ModelRunnerOutput:
        if self.done is not None:
            self.done.synchronize()
        if self.host_sampled is not None:
            self.output.sampled_token_ids = self.host_sampled.tolist()
            self.host_sampled = None
        return self.output


# Device memory kept free beyond the profiled peak for the CUDA graphs' own pool.
_GRAPH_MEMORY_RESERVE = 512 << 20


class ModelRunner:
    """Owns the model and the KV cache of one device.

    On CUDA: step inputs go through pinned staging into persistent device buffers
    (DeviceInputs), the KV cache takes what ``gpu_memory_utilization`` leaves after a profiled
    forward pass of a full token budget, and decode steps replay CUDA graphs unless
    ``enforce_eager``."""

    def __init__(self, config: EngineConfig, plugins: PluginManager) -> None:
        self.config = config
        self.device = config.device.torch_device
        self.dtype = config.model.torch_dtype
        self.block_size = config.cache.block_size
        if self.device.type == "cpu":
            keep_freed_cpu_memory()
        self.model = self._build_model(plugins)
        self.attn_layers = [m for m in self.model.modules() if isinstance(m, Attention)]
        self.backend = self._build_attention_backend(plugins)
        self.inputs = self._make_device_inputs()
        self.num_blocks = self._determine_num_blocks()
        self._allocate_kv_cache()
        self.graphs, self.piecewise = self._capture_cuda_graphs()
        self.sampler = Sampler()
        self._previous: PreviousSample | None = None
        m = config.model
        self.pooler = Pooler(self.model, m.task, m.pooler) if m.task != "generate" else None

    def _build_model(self, plugins: PluginManager) -> torch.nn.Module:
        m = self.config.model
        arch = plugins.hook.resolve_model(hf_config=m.hf_config, model_path=m.model_path)
        registry = plugins.models
        if arch is None or arch not in registry:
            supported = ", ".join(registry.names()) or "(none)"
            raise ValueError(
                f"model architecture {arch or m.architectures!r} is not supported; "
                f"supported architectures: {supported}"
            )
        model_cls = registry.get(arch)
        quant = self._build_quant_method(plugins)
        linear_method = (
            quant.get_linear_method if quant is not None else lambda _: UnquantizedLinearMethod()
        )
        ctx = ModelContext(m.hf_config, self.dtype, linear_method)
        with torch.device(self.device):
            model = model_cls(ctx)
        load_weights(model, m)
        return model.eval()

    def _build_quant_method(self, plugins: PluginManager) -> QuantMethod | None:
        """The quant method ``--quantization`` names, else the checkpoint's; None: unquantized."""
        m = self.config.model
        hf_quant_config = m.hf_quant_config
        name = plugins.hook.resolve_quant_method(
            hf_quant_config=hf_quant_config, requested=m.quantization
        )
        if name is None:
            return None
        registry = plugins.quant_methods
        if name not in registry:
            if m.quantization is None and is_gguf(m.model_path):
                # The GGUF loader dequantizes every tensor, so the file also runs unquantized
                # (e.g. with the gguf plugin left out of PAGODA_PLUGINS).
                logger.info("quantization method %r is not registered: running dequantized", name)
                return None
            known = ", ".join(registry.names()) or "(none)"
            raise ValueError(f"quantization method {name!r} is not registered; registered: {known}")
        logger.info("quantization method: %s", name)
        return registry.get(name)(hf_quant_config)

    def _build_attention_backend(self, plugins: PluginManager) -> object:
        registry = plugins.attention_backends
        name = self.config.device.attention_backend
        if name is None:
            usable = [
                e
                for e in registry.entries()
                if self.device.type in e.extra.get("devices", ("cpu",))
            ]
            if not usable:
                raise ValueError(f"no attention backend for device {self.device.type!r}")
            name = max(usable, key=lambda e: e.extra.get("priority", 0)).name
        return registry.get(name)()

    def release(self) -> None:
        """Drop the model, the KV cache and the CUDA graphs (e.g. before a benchmark loads
        another engine in the same process); the runner cannot execute afterwards."""
        for layer in self.attn_layers:
            layer.kv_cache = torch.empty(0)
        self.attn_layers = []
        self.graphs = self.piecewise = None
        self.inputs = None
        self.model = None  # type: ignore[assignment]

    def _make_device_inputs(self) -> DeviceInputs | None:
        if self.device.type != "cuda":
            return None
        sched = self.config.scheduler
        max_len = self.config.model.max_model_len or 1
        return DeviceInputs(
            max_tokens=max(sched.max_num_batched_tokens, sched.max_num_seqs),
            max_reqs=sched.max_num_seqs,
            max_blocks=-(-max_len // self.block_size) + 1,
            block_size=self.block_size,
            device=self.device,
        )

    def _uses_cuda_graphs(self) -> bool:
        return (
            self.inputs is not None
            and not self.config.device.enforce_eager
            and self.config.model.task == "generate"  # pooling models never decode
            and supports_graphs(self.backend)
        )

    def _capture_cuda_graphs(self) -> tuple[CUDAGraphRunner | None, PiecewiseGraphRunner | None]:
        """Decode graphs, then piecewise graphs for the other steps (prefill chunks)."""
        if not self._uses_cuda_graphs():
            return None, None
        assert self.inputs is not None
        sched = self.config.scheduler
        decode = CUDAGraphRunner(
            self.model,
            self.backend,
            self.inputs,
            min(sched.max_num_seqs, sched.max_num_batched_tokens),
        )
        decode.capture()
        piecewise = PiecewiseGraphRunner(
            self.model, self.backend, self.inputs, sched.max_num_batched_tokens
        )
        piecewise.capture()
        return decode, piecewise

    def _block_bytes(self) -> int:
        per_layer = sum(2 * self.block_size * a.num_kv_heads * a.head_dim for a in self.attn_layers)
        return per_layer * torch.finfo(self.dtype).bits // 8

    def _determine_num_blocks(self) -> int:
        cache = self.config.cache
        if cache.num_gpu_blocks_override is not None:
            return cache.num_gpu_blocks_override
        if not self.attn_layers:
            # An encoder keeps no KV cache: virtual blocks (no memory) for the scheduler's
            # accounting, enough for max_num_seqs full-length requests.
            max_len = self.config.model.max_model_len or 1
            return self.config.scheduler.max_num_seqs * -(-max_len // self.block_size)
        if self.device.type == "cpu":
            budget = cache.kv_cache_memory or 0
            if cache.kv_cache_memory_is_default:
                # Never more than max_num_seqs full-length requests can use.
                seqs, max_len = self.config.scheduler.max_num_seqs, self.config.model.max_model_len
                useful = seqs * -(-(max_len or 1) // self.block_size) * self._block_bytes()
                budget = min(budget, useful)
        else:
            weights = torch.cuda.memory_allocated(self.device)
            peak = self._profile_peak_memory()
            free, total = torch.cuda.mem_get_info(self.device)
            # Memory this process holds outside torch's allocator (CUDA context, libraries).
            non_torch = (total - free) - torch.cuda.memory_reserved(self.device)
            graphs = _GRAPH_MEMORY_RESERVE
            if self._uses_cuda_graphs():
                # The piecewise graphs' pool holds the activations of a forward pass of their
                # largest size (they grow about in proportion to the tokens).
                tokens = self.config.scheduler.max_num_batched_tokens
                graphs += (peak - weights) * min(tokens, piecewise_graphs.MAX_TOKENS) // tokens
            budget = int(total * cache.gpu_memory_utilization) - peak - non_torch - graphs
            logger.info(
                "memory profile: peak %.2f GiB (weights and activations of %d tokens), "
                "outside torch %.2f GiB, CUDA graphs %.2f GiB, KV cache budget %.2f GiB",
                peak / 2**30,
                self.config.scheduler.max_num_batched_tokens,
                non_torch / 2**30,
                graphs / 2**30,
                budget / 2**30,
            )
        num_blocks = budget // self._block_bytes()
        if num_blocks < 1:
            raise ValueError("the KV cache budget is too small for a single block")
        return int(num_blocks)

    @torch.inference_mode()
    def _profile_peak_memory(self) -> int:
        """Peak device memory (bytes) of a forward pass over a full token budget of prefill
        plus logits of a full batch of sequences, with the weights; the KV cache it needs
        for the pass is left out. Also compiles the prefill kernels."""
        sched = self.config.scheduler
        bs = self.block_size
        num_tokens = sched.max_num_batched_tokens
        seq_len = min(num_tokens, self.config.model.max_model_len or num_tokens)
        num_seqs = max(1, num_tokens // seq_len)
        num_tokens = num_seqs * seq_len
        blocks_per_seq = -(-seq_len // bs)
        for layer in self.attn_layers:
            layer.kv_cache = torch.zeros(
                2,
                num_seqs * blocks_per_seq,
                bs,
                layer.num_kv_heads,
                layer.head_dim,
                dtype=self.dtype,
                device=self.device,
            )
        kv_bytes = num_seqs * blocks_per_seq * self._block_bytes()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        dev = self.device
        positions = torch.arange(seq_len, device=dev).repeat(num_seqs)
        tables = torch.arange(num_seqs * blocks_per_seq, dtype=torch.int32, device=dev)
        tables = tables.view(num_seqs, blocks_per_seq)
        slots = (tables.long() * bs).repeat_interleave(bs, dim=1)[:, :seq_len]
        slots = (slots + torch.arange(seq_len, device=dev) % bs).reshape(-1)
        meta = AttentionMetadata(
            num_decodes=0,
            query_start_loc=[i * seq_len for i in range(num_seqs + 1)],
            seq_lens=[seq_len] * num_seqs,
            slot_mapping=slots,
            block_tables=tables,
            block_size=bs,
            max_seq_len=seq_len,
        )
        input_ids = torch.zeros(num_tokens, dtype=torch.long, device=dev)
        self.backend.prepare(meta)
        with forward_context(ForwardContext(meta, self.backend)):
            hidden = self.model(input_ids, positions)
        rows = min(sched.max_num_seqs, num_tokens)
        logits = self.model.compute_logits(hidden[:rows]).float()
        # The sampler's largest intermediates: a probability copy and a sort of one row set.
        logits.softmax(dim=-1).sort(dim=-1)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - kv_bytes
        del hidden, logits
        for layer in self.attn_layers:
            layer.kv_cache = torch.empty(0)
        torch.cuda.empty_cache()
        return int(peak)

    def _allocate_kv_cache(self) -> None:
        for layer in self.attn_layers:
            layer.kv_cache = torch.zeros(
                2,
                self.num_blocks,
                self.block_size,
                layer.num_kv_heads,
                layer.head_dim,
                dtype=self.dtype,
                device=self.device,
            )
        max_len = self.config.model.max_model_len or 1
        logger.info(
            "KV cache: %d blocks of %d tokens (%.1f MiB); maximum concurrency for %d-token "
            "requests: %.2fx",
            self.num_blocks,
            self.block_size,
            self.num_blocks * self._block_bytes() / 2**20,
            max_len,
            self.num_blocks * self.block_size / max_len,
        )

    def _prepare(
        self, sched: SchedulerOutput
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        bs = self.block_size
        input_ids: list[int] = []
        pending_src: list[int] = []  # per token: its row in the previous sample, or -1
        any_pending = False
        positions: list[int] = []
        slots: list[int] = []
        qsl = [0]
        seq_lens: list[int] = []
        for s in sched.scheduled:
            r = s.request
            start = r.num_computed_tokens
            end = start + s.num_new_tokens
            known = r.token_ids[start:end]
            input_ids += known
            pending_src += [-1] * len(known)
            if len(known) < s.num_new_tokens:  # pending: it comes from the previous sample
                assert self._previous is not None
                input_ids.append(0)
                pending_src.append(self._previous.rows[r])
                any_pending = True
            positions.extend(range(start, end))
            slots.extend(s.block_ids[p // bs] * bs + p % bs for p in range(start, end))
            qsl.append(qsl[-1] + s.num_new_tokens)
            seq_lens.append(end)
        width = max(len(s.block_ids) for s in sched.scheduled)
        tables = [s.block_ids + [0] * (width - len(s.block_ids)) for s in sched.scheduled]
        dev = self.device
        meta = AttentionMetadata(
            num_decodes=sched.num_decodes,
            query_start_loc=qsl,
            seq_lens=seq_lens,
            slot_mapping=torch.tensor(slots, dtype=torch.long, device=dev),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),
            block_size=bs,
            max_seq_len=max(seq_lens),
        )
        ids = torch.tensor(input_ids, dtype=torch.long, device=dev)
        if any_pending:
            assert self._previous is not None
            src = torch.tensor(pending_src, dtype=torch.long, device=dev)
            fill_pending(ids, src, self._previous.sampled)
        return ids, torch.tensor(positions, dtype=torch.long, device=dev), meta

    def _forward(self, sched: SchedulerOutput) -> tuple[torch.Tensor, AttentionMetadata]:
        """The step's hidden states on CUDA: a graph replay for decode batches, piecewise
        graphs for other steps up to their size; else (and on the CPU) eager."""
        if self.graphs is not None and self.graphs.can_run(sched):
            return self.graphs.run(sched, self._previous)
        if self.inputs is not None:
            input_ids, positions, meta = self.inputs.prepare(sched, self._previous)
        else:
            input_ids, positions, meta = self._prepare(sched)
        self.backend.prepare(meta)
        ctx = ForwardContext(meta, self.backend)
        if self.piecewise is not None and self.piecewise.can_run(sched.num_tokens):
            return self.piecewise.forward(ctx, sched.num_tokens), meta
        with forward_context(ctx):
            hidden = self.model(input_ids, positions)
        return hidden, meta

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput) -> LaunchedStep:
        """Queue a step's forward pass and sampling without waiting for the device (unless
        a row needs logprobs or prompt logprobs, which are read back here)."""
        if self.pooler is not None:
            return LaunchedStep(ModelRunnerOutput(pooler_output=self.pooler.execute(self, sched)))
        hidden, meta = self._forward(sched)
        step = LaunchedStep(ModelRunnerOutput())
        rows = [i for i, s in enumerate(sched.scheduled) if s.samples]
        if rows:
            if len(rows) == sched.num_decodes == len(sched.scheduled):
                last_hidden = hidden[: len(rows)]  # one token per request: rows are in order
            else:
                qsl = meta.query_start_loc
                last = host_to_device([qsl[i + 1] - 1 for i in rows], torch.long, self.device)
                last_hidden = hidden[last]
            logits = self.model.compute_logits(last_hidden).float()
            requests = [sched.scheduled[i].request for i in rows]
            result = self.sampler(logits, [r.sampling_row for r in requests])
            step.requests = requests
            step.output.logprobs = result.logprobs
            self._previous = PreviousSample({r: i for i, r in enumerate(requests)}, result.sampled)
            if self.device.type == "cuda":
                step.host_sampled = torch.empty(len(rows), dtype=torch.long, pin_memory=True)
                step.host_sampled.copy_(result.sampled, non_blocking=True)
                step.done = torch.cuda.Event()
                step.done.record()
            else:
                step.host_sampled = result.sampled
        for i, s in enumerate(sched.scheduled):
            k = s.request.sampling_params.prompt_logprobs
            if k is not None:
                self._prompt_logprobs(s, hidden, meta.query_start_loc[i], k, step.output)
        return step

    def _prompt_logprobs(
        self, s: object, hidden: torch.Tensor, offset: int, k: int, out: ModelRunnerOutput
    ) -> None:
        request = s.request  # type: ignore[attr-defined]
        start = request.num_computed_tokens
        stop = min(start + s.num_new_tokens, request.num_prompt_tokens - 1)  # type: ignore[attr-defined]
        if stop <= start:
            return
        logits = self.model.compute_logits(hidden[offset : offset + stop - start]).float()
        targets = torch.tensor(request.token_ids[start + 1 : stop + 1], device=self.device)
        out.prompt_logprobs[request.request_id] = compute_prompt_logprobs(logits, targets, k)
