"""BlockPool: reference counts, the free LRU, and the prefix-hash -> block map."""

import pytest

from pagoda.core.block_pool import BlockPool


def ids(blocks) -> list[int]:
    return [b.block_id for b in blocks]


def test_allocate_takes_one_reference_and_leaves_the_free_queue():
    pool = BlockPool(4, enable_caching=True)
    blocks = pool.allocate(3)
    assert [b.ref_cnt for b in blocks] == [1, 1, 1]
    assert len(set(ids(blocks))) == 3
    assert pool.num_free_blocks == 1
    assert pool.usage == pytest.approx(0.75)


def test_a_block_returns_to_the_free_queue_only_when_its_last_reference_is_dropped():
    pool = BlockPool(2, enable_caching=True)
    (block,) = pool.allocate(1)
    pool.touch([block])  # a second request shares it
    assert block.ref_cnt == 2
    pool.free([block])
    assert block.ref_cnt == 1
    assert pool.num_free_blocks == 1  # still held by the other request
    pool.free([block])
    assert block.ref_cnt == 0
    assert pool.num_free_blocks == 2


def test_free_queue_is_lru_oldest_freed_block_is_reused_first():
    pool = BlockPool(3, enable_caching=True)
    a, b, c = pool.allocate(3)
    pool.free([b])
    pool.free([c, a])
    assert ids(pool.allocate(3)) == [b.block_id, c.block_id, a.block_id]


def test_fresh_blocks_are_taken_before_recently_freed_ones():
    pool = BlockPool(3, enable_caching=True)
    (a,) = pool.allocate(1)
    pool.free([a])
    # The two never-used blocks were freed "earlier" than `a`.
    assert a.block_id not in ids(pool.allocate(2))
    assert ids(pool.allocate(1)) == [a.block_id]


def test_allocating_more_than_is_free_raises_and_takes_nothing():
    pool = BlockPool(2, enable_caching=True)
    pool.allocate(1)
    with pytest.raises(RuntimeError, match="2 blocks, 1 free"):
        pool.allocate(2)
    assert pool.num_free_blocks == 1


def test_a_pool_needs_at_least_one_block():
    with pytest.raises(ValueError, match="at least one block"):
        BlockPool(0, enable_caching=True)


def test_a_cached_block_keeps_its_hash_after_free_and_touch_revives_it():
    pool = BlockPool(2, enable_caching=True)
    (block,) = pool.allocate(1)
    pool.cache_block(block, 1234)
    pool.free([block])
    assert pool.num_free_blocks == 2
    assert pool.get_cached_block(1234) is block  # a later request can still hit it
    pool.touch([block])
    assert block.ref_cnt == 1
    assert block.block_hash == 1234
    assert pool.num_free_blocks == 1  # it left the free queue
    # ...so it is not handed out as a fresh block.
    assert ids(pool.allocate(1)) != [block.block_id]


def test_reallocating_a_cached_free_block_evicts_its_hash():
    pool = BlockPool(1, enable_caching=True)
    (block,) = pool.allocate(1)
    pool.cache_block(block, 99)
    pool.free([block])
    (again,) = pool.allocate(1)
    assert again is block
    assert block.block_hash is None
    assert block.ref_cnt == 1
    assert pool.get_cached_block(99) is None


def test_eviction_follows_lru_so_the_most_recently_freed_hash_survives():
    pool = BlockPool(2, enable_caching=True)
    a, b = pool.allocate(2)
    pool.cache_block(a, 1)
    pool.cache_block(b, 2)
    pool.free([b, a])  # tail first, as the KV cache manager frees: `a` is freed last
    pool.allocate(1)
    assert pool.get_cached_block(2) is None
    assert pool.get_cached_block(1) is a


def test_duplicate_hash_first_writer_wins_and_evicting_the_duplicate_keeps_it():
    pool = BlockPool(3, enable_caching=True)
    first, second, _ = pool.allocate(3)
    pool.cache_block(first, 7)
    pool.cache_block(second, 7)
    assert pool.get_cached_block(7) is first
    pool.free([second])
    pool.allocate(1)  # evicts `second`, which is not the block the map points to
    assert second.block_hash is None
    assert pool.get_cached_block(7) is first


def test_a_block_is_cached_under_one_hash_only():
    pool = BlockPool(1, enable_caching=True)
    (block,) = pool.allocate(1)
    pool.cache_block(block, 1)
    pool.cache_block(block, 2)
    assert block.block_hash == 1
    assert pool.get_cached_block(2) is None


def test_caching_disabled_records_no_hashes():
    pool = BlockPool(1, enable_caching=False)
    (block,) = pool.allocate(1)
    pool.cache_block(block, 5)
    assert block.block_hash is None
    assert pool.get_cached_block(5) is None


def test_reset_prefix_cache_forgets_every_hash():
    pool = BlockPool(2, enable_caching=True)
    a, b = pool.allocate(2)
    pool.cache_block(a, 1)
    pool.cache_block(b, 2)
    pool.free([a])
    pool.reset_prefix_cache()
    assert pool.get_cached_block(1) is None
    assert pool.get_cached_block(2) is None
    assert a.block_hash is None and b.block_hash is None
