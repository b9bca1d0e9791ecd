"""KVCacheManager: the prefix hash chain, prefix hits, slot allocation and freeing."""

from pagoda.core.kv_cache import KVCacheManager, hash_block
from pagoda.core.request import Request
from pagoda.sampling_params import SamplingParams

BS = 4  # block size of every manager here


def make_request(rid: str, tokens: list[int], extra_keys: tuple = (), **params) -> Request:
    return Request(
        rid,
        list(tokens),
        SamplingParams(**params),
        frozenset(),
        0.0,
        1024,
        extra_keys=extra_keys,
    )


def prefill(kv: KVCacheManager, request: Request) -> int:
    """Admit ``request`` as the scheduler does: prefix hit, then slots for the rest, all of
    it computed. Returns the number of hit tokens."""
    hit_blocks, num_hit = kv.get_computed_blocks(request)
    assert kv.allocate_slots(request, request.num_tokens - num_hit, hit_blocks)
    request.num_computed_tokens = request.num_tokens
    return num_hit


def test_hash_of_a_block_depends_on_parent_tokens_and_extra_keys():
    base = hash_block(None, (1, 2, 3, 4), ())
    assert hash_block(None, (1, 2, 3, 4), ()) == base
    assert hash_block(None, (1, 2, 3, 5), ()) != base
    assert hash_block(base, (1, 2, 3, 4), ()) != base
    assert hash_block(None, (1, 2, 3, 4), ("lora-1",)) != base


def test_hash_chain_a_block_after_a_different_prefix_hashes_differently():
    kv = KVCacheManager(16, BS, enable_caching=True)
    a = make_request("a", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0])
    b = make_request("b", [1, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12, 0])  # same 1st and 3rd block
    ha = kv._block_hashes(a, a.num_tokens)
    hb = kv._block_hashes(b, b.num_tokens)
    assert len(ha) == len(hb) == 3  # only full blocks are hashed
    assert ha[0] == hb[0]
    assert ha[1] != hb[1]
    assert ha[2] != hb[2]  # same tokens, different parent


def test_equal_prefix_hits_the_same_physical_blocks():
    kv = KVCacheManager(16, BS, enable_caching=True)
    a = make_request("a", list(range(10)))
    prefill(kv, a)
    b = make_request("b", list(range(8)) + [99, 98, 97])
    assert prefill(kv, b) == 8
    assert kv.block_ids(b)[:2] == kv.block_ids(a)[:2]
    assert kv.block_ids(b)[2] != kv.block_ids(a)[2]
    assert [blk.ref_cnt for blk in kv.req_blocks["b"][:2]] == [2, 2]


def test_same_tokens_with_different_extra_keys_do_not_hit():
    kv = KVCacheManager(16, BS, enable_caching=True)
    tokens = list(range(9))
    prefill(kv, make_request("a", tokens, extra_keys=("lora-1",)))
    assert kv.get_computed_blocks(make_request("b", tokens, extra_keys=("lora-2",))) == ([], 0)
    assert kv.get_computed_blocks(make_request("c", tokens))[1] == 0
    assert kv.get_computed_blocks(make_request("d", tokens, extra_keys=("lora-1",)))[1] == 8


def test_the_last_token_is_never_a_hit():
    kv = KVCacheManager(16, BS, enable_caching=True)
    prefill(kv, make_request("a", list(range(9))))  # blocks [0-3] and [4-7] are cached
    # Exactly two full cached blocks: the second would cover the last token, whose logits
    # are needed, so only the first one hits.
    exact = make_request("b", list(range(8)))
    blocks, num_hit = kv.get_computed_blocks(exact)
    assert (len(blocks), num_hit) == (1, 4)
    longer = make_request("c", list(range(9)))
    assert kv.get_computed_blocks(longer)[1] == 8


def test_stats_count_queries_and_hits_in_tokens():
    kv = KVCacheManager(16, BS, enable_caching=True)
    prefill(kv, make_request("a", list(range(10))))
    assert (kv.stats.queries, kv.stats.hits) == (10, 0)
    prefill(kv, make_request("b", list(range(9)) + [50, 51, 52]))
    assert (kv.stats.queries, kv.stats.hits) == (22, 8)


def test_freed_blocks_stay_hittable_until_reused():
    kv = KVCacheManager(4, BS, enable_caching=True)
    a = make_request("a", list(range(9)))
    prefill(kv, a)
    kv.free(a)
    assert kv.num_free_blocks == 4
    b = make_request("b", list(range(9)))
    assert prefill(kv, b) == 8
    assert kv.num_free_blocks == 1  # two revived blocks and one fresh one


def test_a_block_filled_by_generated_tokens_is_published():
    kv = KVCacheManager(8, BS, enable_caching=True)
    a = make_request("a", [5, 6, 7])
    prefill(kv, a)
    a.append_output_token(8)  # decode step: token 8 completes the first block
    assert kv.allocate_slots(a, 1)
    b = make_request("b", [5, 6, 7, 8, 9])
    assert kv.get_computed_blocks(b)[1] == 4


def test_only_blocks_whose_tokens_are_scheduled_are_published():
    # A chunked prefill schedules 4 of 12 tokens: the 2nd and 3rd blocks have no K/V yet,
    # so no other request may hit them.
    kv = KVCacheManager(8, BS, enable_caching=True)
    a = make_request("a", list(range(12)))
    assert kv.allocate_slots(a, 4)
    assert kv.get_computed_blocks(make_request("b", list(range(13))))[1] == 4
    a.num_computed_tokens = 4
    assert kv.allocate_slots(a, 8)
    assert kv.get_computed_blocks(make_request("c", list(range(13))))[1] == 12


def test_blocks_are_allocated_only_when_a_new_block_is_entered():
    kv = KVCacheManager(8, BS, enable_caching=True)
    a = make_request("a", [1, 2, 3])
    prefill(kv, a)
    assert len(kv.block_ids(a)) == 1
    a.append_output_token(4)  # slot 3 of block 0
    assert kv.allocate_slots(a, 1)
    a.num_computed_tokens += 1
    assert len(kv.block_ids(a)) == 1
    a.append_output_token(5)  # slot 0 of block 1
    assert kv.allocate_slots(a, 1)
    assert len(kv.block_ids(a)) == 2
    assert kv.num_free_blocks == 6


def test_allocate_slots_returns_false_and_changes_nothing_when_short():
    kv = KVCacheManager(4, BS, enable_caching=True)
    big = make_request("big", list(range(17)))  # 5 blocks
    assert not kv.allocate_slots(big, 17)
    assert kv.num_free_blocks == 4
    assert kv.block_ids(big) == []
    assert "big" not in kv.req_blocks
    # A running request that cannot grow keeps exactly the blocks it had.
    a = make_request("a", list(range(8)))
    assert kv.allocate_slots(a, 8)
    held = kv.block_ids(a)
    a.num_computed_tokens = 8
    a.token_ids.extend(range(100, 112))
    assert not kv.allocate_slots(a, 12)  # needs 3 more, 2 free
    assert kv.block_ids(a) == held
    assert kv.num_free_blocks == 2


def test_hit_blocks_waiting_in_the_free_queue_count_against_free_space():
    kv = KVCacheManager(4, BS, enable_caching=True)
    a = make_request("a", list(range(9)))
    prefill(kv, a)
    kv.free(a)  # its two full blocks sit, still cached, among the 4 free blocks
    b = make_request("b", list(range(20)))  # hits 8 tokens, needs 3 more blocks: 5 > 4
    hit_blocks, num_hit = kv.get_computed_blocks(b)
    assert num_hit == 8
    assert not kv.allocate_slots(b, 12, hit_blocks)
    assert kv.num_free_blocks == 4
    assert all(blk.ref_cnt == 0 for blk in hit_blocks)
    assert kv.get_computed_blocks(make_request("c", list(range(9))))[1] == 8  # still cached


def test_free_releases_every_block_tail_first():
    kv = KVCacheManager(8, BS, enable_caching=True)
    a = make_request("a", list(range(10)))
    prefill(kv, a)
    b = make_request("b", list(range(8)) + [40, 41, 42, 43, 44])
    prefill(kv, b)
    kv.free(a)
    assert kv.num_free_blocks == 8 - 2 - 2  # b still holds the two shared blocks
    kv.free(b)
    assert kv.num_free_blocks == 8
    assert kv.req_blocks == {} and kv.req_hashes == {} and kv.req_published == {}
    # Tails were freed before the shared prefix, so taking all but two free blocks (the
    # 4 unused ones and both tails) still leaves the prefix cached.
    kv.pool.allocate(6)
    assert kv.get_computed_blocks(make_request("c", list(range(9))))[1] == 8


def test_free_of_an_unknown_request_is_a_no_op():
    kv = KVCacheManager(2, BS, enable_caching=True)
    kv.free(make_request("never", [1]))
    assert kv.num_free_blocks == 2


def test_no_hits_when_prefix_caching_is_disabled():
    kv = KVCacheManager(8, BS, enable_caching=False)
    prefill(kv, make_request("a", list(range(9))))
    assert kv.get_computed_blocks(make_request("b", list(range(9)))) == ([], 0)
    assert kv.stats.hits == 0


def test_requests_asking_for_prompt_logprobs_compute_the_whole_prompt():
    kv = KVCacheManager(8, BS, enable_caching=True)
    prefill(kv, make_request("a", list(range(9))))
    b = make_request("b", list(range(9)), prompt_logprobs=1)
    assert kv.get_computed_blocks(b) == ([], 0)
