"""Exact and near-duplicate rows: MinHash signatures and LSH banding, as datasketch defines them.

A row's words (runs of letters, digits and underscores, lower-cased) form its shingles, word
3-grams (a row of fewer words is one shingle). Two rows are **exact** duplicates when their lower-cased, whitespace-collapsed
texts are equal, and **near** duplicates when the MinHash estimate of their shingles' Jaccard
similarity reaches ``threshold`` (default 0.8) and LSH puts them in a shared bucket.

The sketch is datasketch's: a :class:`datasketch.MinHash` (scheme ``affine32``) fixes the
permutations, and :class:`datasketch.MinHashLSH` picks the bands and rows per band for the
threshold. Both are applied here with numpy (and the words split by pyarrow) to every row at
once, because a million
``MinHash`` objects, each updated and inserted on its own, take minutes; the signatures are
the ones ``MinHash.update_batch`` gives for the same shingle hashes (a test compares them).

Rows related by either kind of duplicate form **groups** (connected components), which the
leakage-safe split keeps on one side and the leakage check compares across files.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NUM_PERM", "THRESHOLD", "Duplicates", "find_duplicates", "shingle_hashes", "signatures"]

NUM_PERM = 64
"""MinHash permutations: the estimate's standard error is about 0.05 at Jaccard 0.8."""
THRESHOLD = 0.8
"""Estimated Jaccard similarity from which two rows are near duplicates."""
_SEED = 1  # datasketch's default seed
_SHINGLE = 3  # words per shingle
_CHUNK_SHINGLES = 1 << 15  # shingles permuted at once (64 permutations: 8 MiB, in cache)
_SEPARATORS = r"[^\p{L}\p{N}_]+"  # what is not a letter, digit or underscore splits words
# MurmurHash3's 32-bit finalizer, the pre-mix datasketch's affine32 scheme applies to each hash.
_FMIX32 = (16, np.uint32(0x85EBCA6B), 13, np.uint32(0xC2B2AE35), 16)


@dataclass(frozen=True)
class Duplicates:
    """For each row, its group (rows connected by exact or near duplication share one) and
    whether it is an exact copy of an earlier row (``exact_of``: that row's index, else -1)."""

    group: np.ndarray
    exact_of: np.ndarray

    def members(self) -> dict[int, list[int]]:
        """Group id -> row indices, for the groups of two or more rows."""
        out: dict[int, list[int]] = {}
        for row, group in enumerate(self.group.tolist()):
            out.setdefault(group, []).append(row)
        return {g: rows for g, rows in out.items() if len(rows) > 1}


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(CRC-32 of each word of each row, flat; each row's word count). Rows are split into
    words by pyarrow's compute kernels (C++, all rows at once); each distinct word is hashed
    once. A row without words counts as one word, the hash of its text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = pa.array(texts, type=pa.large_string())
    words = pc.split_pattern_regex(pc.utf8_lower(rows), _SEPARATORS)
    flat = pc.list_flatten(words)
    row_of = np.repeat(np.arange(len(texts)), pc.list_value_length(words).to_numpy())
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)  # splitting leaves "" at ends
    encoded = pc.dictionary_encode(pc.filter(flat, keep))
    vocabulary = encoded.dictionary.to_pylist()
    word_hash = np.array([zlib.crc32(w.encode()) for w in vocabulary], dtype=np.uint64)
    ids = word_hash[encoded.indices.to_numpy()] if len(vocabulary) else np.zeros(0, np.uint64)
    length = np.bincount(row_of[keep], minlength=len(texts)).astype(np.int64)
    empty = np.flatnonzero(length == 0)
    if len(empty):
        start = np.cumsum(length) - length
        texts_hash = [zlib.crc32(texts[i].encode()) for i in empty.tolist()]
        ids = np.insert(ids, start[empty], np.asarray(texts_hash, dtype=np.uint64))
        length[empty] = 1
    return ids, length


def shingle_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit hash of every shingle of every row, each row's offset into it): a 3-gram's
    hash combines its words' hashes; a row of fewer words is one shingle of them all."""
    ids, length = _word_hashes(texts)
    start = np.cumsum(length) - length
    count = np.maximum(length - (_SHINGLE - 1), 1)  # shingles per row
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    row_of = np.repeat(np.arange(len(texts)), count)
    position = np.arange(offsets[-1]) - offsets[row_of] + start[row_of]
    short = length[row_of]
    combined = np.zeros(offsets[-1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(_SHINGLE):
            # A short row's single shingle takes as many words as it has.
            inside = k < short
            word = ids[np.where(inside, position + k, position)]
            # FNV-style mixing of the words' hashes, in wrapping 64-bit arithmetic.
            combined = np.where(inside, (combined * np.uint64(0x100000001B3)) ^ word, combined)
    hashes = (combined ^ (combined >> np.uint64(32))).astype(np.uint32)
    return hashes, offsets


def _fmix32(values: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    values = values ^ (values >> np.uint32(s1))
    values = values * m1
    values = values ^ (values >> np.uint32(s2))
    values = values * m2
    return values ^ (values >> np.uint32(s3))


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signature of each row (rows x ``num_perm``, uint32): for each permutation
    ``a * fmix(h) + b mod 2^32`` of datasketch's ``MinHash(num_perm, seed=1)``, the minimum
    over the row's shingle hashes."""
    from datasketch import MinHash

    a, b = (
        np.asarray(p, dtype=np.uint32) for p in MinHash(num_perm=num_perm, seed=_SEED).permutations
    )
    mixed = _fmix32(hashes.astype(np.uint32))
    rows = len(offsets) - 1
    out = np.empty((rows, num_perm), dtype=np.uint32)
    buffer = np.empty((_CHUNK_SHINGLES, num_perm), dtype=np.uint32)
    first = 0
    while first < rows:
        # The rows whose shingles fit in one buffer (at least one row).
        last = int(np.searchsorted(offsets, offsets[first] + _CHUNK_SHINGLES, side="right")) - 1
        last = min(max(last, first + 1), rows)
        lo, hi = int(offsets[first]), int(offsets[last])
        if hi - lo > len(buffer):
            buffer = np.empty((hi - lo, num_perm), dtype=np.uint32)
        permuted = buffer[: hi - lo]
        np.multiply(mixed[lo:hi, None], a[None, :], out=permuted)  # wraps modulo 2^32
        np.add(permuted, b[None, :], out=permuted)
        out[first:last] = np.minimum.reduceat(permuted, offsets[first:last] - lo, axis=0)
        first = last
    return out


NEAR_CHARS = 100_000
"""Rows are compared on their first this many characters: far more than any training row
needs, and a bound on the memory one pathological row (a 49 MB line) takes."""


def find_duplicates(texts: Sequence[str], *, threshold: float = THRESHOLD) -> Duplicates:
    """Exact and near-duplicate groups of ``texts`` (see the module's description), comparing
    the first :data:`NEAR_CHARS` characters of each row."""
    texts = [text[:NEAR_CHARS] for text in texts]
    exact_of = _exact(texts)
    parent = [int(e) if e >= 0 else i for i, e in enumerate(exact_of.tolist())]
    unique = np.flatnonzero(exact_of < 0)
    if len(unique) > 1:
        hashes, offsets = shingle_hashes([texts[i] for i in unique])
        for a, b in _near_pairs(signatures(hashes, offsets), threshold):
            _union(parent, int(unique[a]), int(unique[b]))
    roots = np.array([_find(parent, i) for i in range(len(texts))], dtype=np.int64)
    return Duplicates(group=roots, exact_of=exact_of)


def _exact(texts: Sequence[str]) -> np.ndarray:
    """For each row, the first row with the same text once lower-cased, with runs of
    whitespace made one space and none at the ends (-1: it is the first); pyarrow's kernels
    over all rows at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = pc.utf8_lower(pa.array(texts, type=pa.large_string()))
    collapsed = pc.utf8_trim_whitespace(pc.replace_substring_regex(rows, r"\s+", " "))
    index = pc.dictionary_encode(collapsed).indices.to_numpy()
    _, first = np.unique(index, return_index=True)
    first_row = first[index]
    return np.where(first_row == np.arange(len(texts)), -1, first_row).astype(np.int64)


def _near_pairs(signature: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, its bucket's first row) that share an LSH bucket in some band and whose
    signatures agree on at least ``threshold`` of the permutations."""
    from datasketch import MinHashLSH

    # Bands tuned for recall (a missed pair costs more than a candidate, which is checked).
    lsh = MinHashLSH(threshold=threshold, num_perm=signature.shape[1], weights=(0.1, 0.9))
    pairs: set[tuple[int, int]] = set()
    for band in range(lsh.b):
        keys = _band_keys(signature[:, band * lsh.r : (band + 1) * lsh.r])
        _, first, bucket = np.unique(keys, return_index=True, return_inverse=True)
        representative = first[bucket]
        candidates = np.flatnonzero(representative != np.arange(len(keys)))
        if not len(candidates):
            continue
        agree = (signature[candidates] == signature[representative[candidates]]).mean(axis=1)
        for row in candidates[agree >= threshold].tolist():
            pairs.add((row, int(representative[row])))
    return sorted(pairs)


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row for a band's ``r`` values (equal bands, equal keys)."""
    keys = np.zeros(len(band), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in band.T:
            keys = keys * np.uint64(0x9E3779B97F4A7C15) + column.astype(np.uint64)
    return keys


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent: list[int], a: int, b: int) -> None:
    root_a, root_b = _find(parent, a), _find(parent, b)
    if root_a != root_b:
        parent[max(root_a, root_b)] = min(root_a, root_b)
