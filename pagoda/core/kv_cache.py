"""KVCacheManager: prefix matching, slot allocation and freeing for requests."""

from __future__ import annotations

from dataclasses import dataclass

from pagoda.core.block_pool import BlockPool, KVBlock
from pagoda.core.request import Request


def hash_block(parent: int | None, tokens: tuple[int, ...], extra_keys: tuple) -> int:
    """A full block's identity: its tokens, everything before it (the parent's hash) and the
    request's extra keys (e.g. a LoRA id), so equal prefixes, and only they, hash equal."""
    return hash((parent, tokens, extra_keys))


@dataclass(slots=True)
class PrefixCacheStats:
    """Counted in tokens, like vLLM's ``prefix_cache_queries`` / ``prefix_cache_hits``."""

    queries: int = 0
    hits: int = 0


class KVCacheManager:
    """Maps requests to blocks of the pool.

    Block layout of a request with block_size 4 and 10 tokens, 6 of them computed::

        token:   0 1 2 3 | 4 5 6 7 | 8 9 . .
        block:   [  b0   ] [  b1   ] [  b2   ]
                 full, hashed          partly filled
                            ^ num_computed_tokens = 6

    Only full blocks are hashed and shared.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.req_blocks: dict[str, list[KVBlock]] = {}
        self.req_hashes: dict[str, list[int]] = {}
        self.req_published: dict[str, int] = {}  # how many of a request's blocks are hashed
        self.stats = PrefixCacheStats()

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def _block_hashes(self, request: Request, num_tokens: int) -> list[int]:
        """Hashes of the request's full blocks among its first ``num_tokens`` tokens (memoised)."""
        hashes = self.req_hashes.setdefault(request.request_id, [])
        bs = self.block_size
        while (len(hashes) + 1) * bs <= num_tokens:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            tokens = tuple(request.token_ids[i * bs : (i + 1) * bs])
            hashes.append(hash_block(parent, tokens, request.extra_keys))
        return hashes

    def get_computed_blocks(self, request: Request) -> tuple[list[KVBlock], int]:
        """The longest run of cached blocks matching the request's first tokens.

        The last token is never a hit (its logits are needed), so at least one token is
        computed: at most ``(num_tokens - 1) // block_size`` blocks match.
        """
        if not self.enable_caching or request.sampling_params.prompt_logprobs is not None:
            return [], 0
        hashes = self._block_hashes(request, request.num_tokens)
        limit = (request.num_tokens - 1) // self.block_size
        hits: list[KVBlock] = []
        for h in hashes[:limit]:
            block = self.pool.get_cached_block(h)
            if block is None:
                break
            hits.append(block)
        self.stats.queries += request.num_tokens
        self.stats.hits += len(hits) * self.block_size
        return hits, len(hits) * self.block_size

    def allocate_slots(
        self, request: Request, num_new_tokens: int, computed_blocks: list[KVBlock] | None = None
    ) -> bool:
        """Make room for ``num_new_tokens`` more tokens after the computed ones.

        ``computed_blocks`` (from :meth:`get_computed_blocks`, first scheduling only) are
        taken by reference. Returns False, changing nothing, when the pool is short.
        """
        blocks = self.req_blocks.setdefault(request.request_id, [])
        computed_blocks = computed_blocks or []
        num_computed = request.num_computed_tokens + len(computed_blocks) * self.block_size
        total = num_computed + num_new_tokens
        num_needed = -(-total // self.block_size) - len(blocks) - len(computed_blocks)
        # Hit blocks that sit in the free queue leave it when touched.
        revived = sum(1 for b in computed_blocks if b.ref_cnt == 0)
        if num_needed > self.pool.num_free_blocks - revived:
            if not blocks:
                del self.req_blocks[request.request_id]
            return False
        self.pool.touch(computed_blocks)
        blocks.extend(computed_blocks)
        if num_needed > 0:
            blocks.extend(self.pool.allocate(num_needed))
        if self.enable_caching:
            # Tokens up to `total` are known now (the scheduled ones included), so every
            # block they fill can be published for later requests.
            start = self.req_published.get(request.request_id, 0)
            known = min(total, request.num_tokens)
            full = known // self.block_size
            hashes = self._block_hashes(request, known)
            for i in range(start, full):
                self.pool.cache_block(blocks[i], hashes[i])
            self.req_published[request.request_id] = max(start, full)
        return True

    def free(self, request: Request) -> None:
        """Release the request's blocks (tail first) and forget its hashes."""
        blocks = self.req_blocks.pop(request.request_id, [])
        self.pool.free(list(reversed(blocks)))
        self.req_hashes.pop(request.request_id, None)
        self.req_published.pop(request.request_id, None)

    def block_ids(self, request: Request) -> list[int]:
        return [b.block_id for b in self.req_blocks.get(request.request_id, ())]
