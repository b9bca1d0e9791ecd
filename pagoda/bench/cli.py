"""The ``pagoda bench`` command group."""

from __future__ import annotations

from typing import Any

import click

from pagoda.cli_options import build_llm, engine_options, pop_engine_kwargs


def length_options(func: Any) -> Any:
    """The random dataset's --input-len, --output-len and --range-ratio."""
    func = click.option(
        "--range-ratio",
        type=float,
        default=0.0,
        show_default=True,
        help="Lengths uniform in [N(1-r), N(1+r)].",
    )(func)
    func = click.option(
        "--output-len",
        default="144",
        show_default=True,
        help="Output tokens per request (ignore_eos): N (with --range-ratio) or LO:HI.",
    )(func)
    return click.option(
        "--input-len",
        default="110",
        show_default=True,
        help="Prompt tokens: N (with --range-ratio) or LO:HI.",
    )(func)


@click.group()
def bench() -> None:
    """Benchmarks: offline throughput and latency."""


@bench.command()
@engine_options
@click.option("--num-prompts", type=int, default=64, show_default=True)
@length_options
@click.option("--prompts-file", default=None, help="Text file, one prompt per line.")
@click.option("--random-ids", is_flag=True, help="Token ids uniform in [0, 10000) instead of text.")
@click.option(
    "--workload",
    type=click.Choice(["default", "nano-vllm", "lognormal"]),
    default="default",
    show_default=True,
    help="nano-vllm: its bench.py draws (random.seed, per request a length then its ids "
    "in [0, 10000], then all max_tokens); --input-len/--output-len give the ranges. "
    "lognormal: --input-len/--output-len are the means (see --lognormal-sigma, "
    "--length-clip), ids uniform in [0, 10000).",
)
@click.option(
    "--lognormal-sigma", type=float, default=1.0, show_default=True, help="lognormal's sigma."
)
@click.option(
    "--length-clip",
    default="4:2048",
    show_default=True,
    help="lognormal: lengths clipped to LO:HI.",
)
@click.option(
    "--bench-seed", type=int, default=0, show_default=True, help="random.seed for the workload."
)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option(
    "--compare",
    type=click.Choice(["hf"]),
    default=None,
    help="Also run transformers generate on the same workload.",
)
@click.option(
    "--hf-batch-size",
    type=int,
    default=None,
    help="transformers batch size (default: all requests in one padded batch).",
)
@click.option(
    "--hf-num-prompts",
    type=int,
    default=None,
    help="Run transformers on the first N requests only (its tok/s is reported on those).",
)
@click.option("--no-warmup", is_flag=True)
@click.option(
    "--repeats",
    type=int,
    default=3,
    show_default=True,
    help="Pooling tasks: timed runs of each engine, back to back (medians reported).",
)
@click.option(
    "--guided-json",
    default=None,
    help="Also run the workload constrained to this JSON schema file (same command).",
)
@click.option("--guided-regex", default=None, help="Also run it constrained to this regex.")
@click.option(
    "--guided-choice", default=None, help="Also run it constrained to one of these (a,b,c)."
)
@click.option(
    "--guided-decoding-backend",
    "guided_backend",
    default=None,
    help="Backend of the constrained run (default: the engine's --guided-decoding-backend).",
)
@click.option("--output-json", default=None, help="Write the results here.")
def throughput(**kwargs: Any) -> None:
    """Offline throughput: every request submitted at once, ignore_eos."""
    from pagoda.bench.throughput import guided_params_from_options, run_throughput
    from pagoda.bench.workload import (
        corpus_token_ids,
        file_workload,
        lognormal_workload,
        nano_vllm_workload,
        parse_length,
        random_workload,
    )

    guided = guided_params_from_options(
        kwargs.pop("guided_json"),
        kwargs.pop("guided_regex"),
        kwargs.pop("guided_choice"),
        kwargs.pop("guided_backend"),
    )
    try:  # checked before the model loads
        in_range = parse_length(kwargs["input_len"], kwargs["range_ratio"])
        out_range = parse_length(kwargs["output_len"], kwargs["range_ratio"])
        clip = parse_length(kwargs["length_clip"], 0.0)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ranged = in_range[0] < in_range[1] or out_range[0] < out_range[1]
    if kwargs["workload"] == "lognormal" and ranged:
        raise click.UsageError(
            "--workload lognormal takes --input-len and --output-len as means (N each, no range)"
        )
    llm = build_llm(pop_engine_kwargs(kwargs))
    if llm.llm_engine.config.model.task != "generate":
        from pagoda.bench.pooling import run_pooling_throughput

        run_pooling_throughput(
            llm,
            kwargs["num_prompts"],
            in_range,
            kwargs["bench_seed"],
            kwargs["compare"],
            kwargs["hf_batch_size"],
            kwargs["repeats"],
            kwargs["output_json"],
        )
        return
    tokenizer = llm.get_tokenizer()
    if kwargs["workload"] == "nano-vllm":
        requests = nano_vllm_workload(
            kwargs["num_prompts"],
            in_range,
            out_range,
            kwargs["bench_seed"],
        )
    elif kwargs["workload"] == "lognormal":
        requests = lognormal_workload(
            kwargs["num_prompts"],
            (in_range[0], out_range[0]),
            kwargs["lognormal_sigma"],
            clip,
            kwargs["bench_seed"],
        )
    elif kwargs["prompts_file"]:
        requests = file_workload(kwargs["prompts_file"], tokenizer, out_range, kwargs["bench_seed"])
    else:
        corpus = None if kwargs["random_ids"] else corpus_token_ids(tokenizer)
        requests = random_workload(
            kwargs["num_prompts"],
            in_range,
            out_range,
            kwargs["bench_seed"],
            corpus,
        )
    click.echo(
        f"workload: {len(requests)} requests, "
        f"{sum(len(r.prompt_token_ids) for r in requests)} prompt tokens, "
        f"{sum(r.max_tokens for r in requests)} output tokens"
    )
    run_throughput(
        llm,
        requests,
        kwargs["temperature"],
        kwargs["compare"],
        kwargs["hf_batch_size"],
        kwargs["output_json"],
        not kwargs["no_warmup"],
        kwargs["hf_num_prompts"],
        guided,
    )


@bench.command()
@engine_options
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--input-len", type=int, default=32, show_default=True)
@click.option("--output-len", type=int, default=128, show_default=True)
@click.option("--num-iters-warmup", type=int, default=1, show_default=True)
@click.option("--num-iters", type=int, default=3, show_default=True)
@click.option("--compare", type=click.Choice(["hf"]), default=None)
@click.option(
    "--hf-output-len",
    type=int,
    default=None,
    help="Output tokens for the transformers run (default: --output-len); ms/token is "
    "comparable, and a slow baseline finishes sooner.",
)
@click.option(
    "--hf-num-iters", type=int, default=None, help="Timed transformers runs (default: --num-iters)."
)
@click.option("--output-json", default=None)
def latency(**kwargs: Any) -> None:
    """Latency of one batch end to end; reports decode ms per output token."""
    from pagoda.bench.latency import run_latency

    engine = pop_engine_kwargs(kwargs)
    engine["enable_prefix_caching"] = False
    llm = build_llm(engine)
    run_latency(
        llm,
        kwargs["batch_size"],
        kwargs["input_len"],
        kwargs["output_len"],
        kwargs["num_iters_warmup"],
        kwargs["num_iters"],
        kwargs["compare"],
        kwargs["output_json"],
        kwargs["hf_output_len"],
        kwargs["hf_num_iters"],
    )


@bench.command("serve")
@click.option(
    "--base-url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The running OpenAI-compatible server.",
)
@click.option(
    "--endpoint",
    type=click.Choice(["/v1/completions", "/v1/chat/completions"]),
    default="/v1/completions",
    show_default=True,
)
@click.option("--model", default=None, help="Model name to send (default: first of /v1/models).")
@click.option(
    "--tokenizer",
    default=None,
    help="Tokenizer (dir, GGUF, alias) to make prompts of exact token lengths; "
    "without it prompts are corpus words, about 1.2 tokens each.",
)
@click.option("--num-prompts", type=int, default=64, show_default=True)
@click.option(
    "--request-rate",
    type=float,
    default=float("inf"),
    show_default=True,
    help="Requests per second, Poisson arrivals; inf sends all at once.",
)
@click.option(
    "--max-concurrency",
    type=int,
    default=None,
    help="Most requests in flight at once (default: unlimited).",
)
@length_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the dataset and the arrival times.",
)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option(
    "--api-key",
    envvar="PAGODA_API_KEY",
    default=None,
    help="Sent as a Bearer token (env PAGODA_API_KEY).",
)
@click.option("--result-file", default=None, help="Write every metric and request as JSON here.")
@click.option("--plot", default=None, help="Draw latency over time into this PNG file.")
def serve_bench(**kwargs: Any) -> None:
    """Load a running OpenAI-compatible server and report vLLM's serving metrics."""
    from pagoda.bench.serve import format_table, run_serve_benchmark

    result = run_serve_benchmark(**kwargs)
    click.echo(format_table(result))
    errors = [r["error"] for r in result["requests"] if not r["success"]]
    if errors:
        click.echo(f"{len(errors)} failed; first error: {errors[0]}", err=True)
