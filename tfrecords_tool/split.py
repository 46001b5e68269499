"""Stage 2: which page goes to which split, shard and task; a pure function of pages and seed."""
import collections
import math
import random

RECORDS_PER_SHARD = 2000  # ~100 MB of 224x224 raw pages, in the 100-200 MB range tf.data likes


def stratified_split(pages, val_fraction, seed):
    """(train, val) pages, both in input order; each class gives round(val_fraction * n) ± 1.

    Per-class counts are rounded by largest remainder so that the val total is exactly
    round(val_fraction * len(pages)) (9,600 of a 48,000-page list at 0.2).
    """
    by_class = collections.defaultdict(list)
    for index, page in enumerate(pages):
        by_class[page.label].append(index)
    wanted = {label: val_fraction * len(indices) for label, indices in by_class.items()}
    counts = {label: math.floor(x) for label, x in wanted.items()}
    shortfall = math.floor(val_fraction * len(pages) + 0.5) - sum(counts.values())
    by_remainder = sorted(wanted, key=lambda label: (counts[label] - wanted[label], label))
    for label in by_remainder[:shortfall]:
        counts[label] += 1
    rng = random.Random(seed)
    val = set()
    for label in sorted(by_class):
        val.update(rng.sample(by_class[label], counts[label]))
    return ([page for i, page in enumerate(pages) if i not in val],
            [page for i, page in enumerate(pages) if i in val])


def default_num_shards(num_records):
    return max(1, math.ceil(num_records / RECORDS_PER_SHARD))


def assign_shards(pages, num_shards, seed):
    """`num_shards` lists of pages: shuffled by seed, then dealt round-robin.

    Shard sizes differ by at most one and every shard holds a mix of all classes.
    """
    shuffled = list(pages)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::num_shards] for i in range(num_shards)]


def for_task(items, task_index, num_tasks):
    """The items (shards) task `task_index` of `num_tasks` converts; tasks get disjoint sets."""
    return items[task_index::num_tasks]
