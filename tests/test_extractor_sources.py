"""Query sources (extractor.sources): seeded prefixes, and data-free synthesis against a real
teacher served over HTTP (a tiny untrained SASRec artifact behind `teacher_mock`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from extractor.client import BlackBoxClient, ClientConfig
from extractor.sources import AutoregressiveConfig, Step, autoregressive, seeded_queries
from seqrec.artifacts import ArtifactInfo, save_artifact
from seqrec.models import ModelConfig, build_model
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

KEY = "sources-key"
N_ITEMS = 200
ITEM_IDS = [f"i{n}" for n in range(N_ITEMS)]


@pytest.fixture(scope="module")
def teacher_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    torch.manual_seed(0)
    config = ModelConfig(arch="sasrec", n_items=N_ITEMS, max_len=20, hidden=16, n_heads=2)
    directory: Path = tmp_path_factory.mktemp("teacher")
    save_artifact(directory, build_model(config), ArtifactInfo(model=config, item_ids=ITEM_IDS))
    with running(create_app(TeacherSettings(model_dir=directory, api_keys=[KEY]))) as url:
        yield url


def grow(url: str, config: AutoregressiveConfig, k: int = 10) -> list[Step]:
    """Every step of one data-free run, asking the teacher through the extractor's client."""

    async def run() -> list[Step]:
        async with BlackBoxClient(ClientConfig(base_url=url, api_key=KEY)) as client:

            async def ask(histories: list[list[str]]) -> list[list[str] | None]:
                return [outcome.items for outcome in await client.recommend_many(histories, k)]

            return [step async for step in autoregressive(config, ITEM_IDS, ask)]

    return asyncio.run(run())


def queries_of(steps: Sequence[Step]) -> list[list[str]]:
    return [history for step in steps for history in step.histories]


# --- seeded ---------------------------------------------------------------------------------

TRAINING = [[f"u{u}-{t}" for t in range(length)] for u, length in enumerate([1, 2, 5, 9, 30])]


def test_seeded_all_prefixes_are_every_prefix_of_each_history() -> None:
    queries = seeded_queries(TRAINING, "all", min_length=2)
    want = [history[:n] for history in TRAINING for n in range(2, len(history) + 1)]
    assert sorted(queries) == sorted(want) and len(queries) == len(want)


def test_seeded_queries_spread_a_partial_budget_over_every_user() -> None:
    histories = [[f"u{u}-{i}" for i in range(30)] for u in range(40)]
    queries = seeded_queries(histories, "all", seed=0)
    first_users = {query[0] for query in queries[:80]}  # what a budget of 80 would ask
    assert len(first_users) >= 30  # user by user, 80 queries would reach only 3 users
    assert queries == seeded_queries(histories, "all", seed=0)  # resumable: same order


def listed_prefixes(
    histories: list[list[str]], prefixes: str | int, min_length: int, seed: int
) -> list[list[str]]:
    """The order of the first version, which built a list per query: query ids on disk name
    these queries, so a resumed run must see the same ones in the same order."""
    rng = np.random.default_rng(seed)
    queries = []
    for history in histories:
        lengths = np.arange(min_length, len(history) + 1)
        if prefixes != "all" and len(lengths) > prefixes:
            lengths = np.sort(rng.choice(lengths, size=prefixes, replace=False))
        queries.extend(history[:n] for n in lengths.tolist())
    return [queries[i] for i in rng.permutation(len(queries))]


@pytest.mark.parametrize("prefixes, min_length, seed", [("all", 1, 0), ("all", 3, 4), (2, 1, 9)])
def test_seeded_queries_keep_the_order_of_the_first_version(
    prefixes: str | int, min_length: int, seed: int
) -> None:
    histories = [[f"u{u}-{t}" for t in range(n)] for u, n in enumerate([4, 1, 7, 2, 12, 3])]
    got = seeded_queries(histories, prefixes, min_length, seed)  # type: ignore[arg-type]
    assert got == listed_prefixes(histories, prefixes, min_length, seed)


def test_seeded_sampled_prefixes_are_seeded_and_bounded() -> None:
    first = seeded_queries(TRAINING, prefixes=3, min_length=1, seed=5)
    assert first == seeded_queries(TRAINING, prefixes=3, min_length=1, seed=5)
    assert first != seeded_queries(TRAINING, prefixes=3, min_length=1, seed=6)
    per_user = [sum(1 for q in first if q[0] == h[0]) for h in TRAINING]
    assert per_user == [1, 2, 3, 3, 3]  # all of them when a user has fewer than asked
    for query in first:
        history = next(h for h in TRAINING if h[0] == query[0])
        assert history[: len(query)] == query  # a prefix of its own user's history
    lengths = [len(q) for q in first if q[0] == TRAINING[4][0]]
    assert len(lengths) == len(set(lengths))  # distinct prefixes


@pytest.mark.parametrize("prefixes", ["all", 3])
def test_whole_first_asks_every_whole_history_before_any_shorter_prefix(
    prefixes: str | int,
) -> None:
    plain = seeded_queries(TRAINING, prefixes, seed=3)  # type: ignore[arg-type]
    first = seeded_queries(TRAINING, prefixes, seed=3, whole_first=True)  # type: ignore[arg-type]
    head = first[: len(TRAINING)]
    assert sorted(head) == sorted(TRAINING)  # each user's whole history, first
    assert all(
        len(query) < len(next(h for h in TRAINING if h[0] == query[0]))
        for query in first[len(TRAINING) :]
    )
    if prefixes == "all":  # the same queries, in another order
        assert sorted(first) == sorted(plain) and first != plain
    else:  # the same count per user, the whole history always among them
        users = [h[0] for h in TRAINING]
        assert [sum(q[0] == u for q in first) for u in users] == [
            sum(q[0] == u for q in plain) for u in users
        ]
    assert first == seeded_queries(TRAINING, prefixes, seed=3, whole_first=True)  # type: ignore[arg-type]


def test_seeded_queries_never_hold_an_item_beyond_the_given_histories() -> None:
    held_out = {"u3-9", "u4-30"}  # what a leave-one-out split keeps back
    given = set().union(*TRAINING)
    for prefixes in ("all", 2):
        items = {item for query in seeded_queries(TRAINING, prefixes, seed=1) for item in query}
        assert items <= given and not items & held_out


def test_seeded_queries_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="prefixes"):
        seeded_queries(TRAINING, prefixes=0)
    with pytest.raises(ValueError, match="prefixes"):
        seeded_queries(TRAINING, prefixes="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_length"):
        seeded_queries(TRAINING, min_length=0)


# --- data-free, autoregressive --------------------------------------------------------------


def test_autoregressive_grows_valid_sequences_from_the_teachers_answers(teacher_url: str) -> None:
    config = AutoregressiveConfig(
        n_sequences=40, min_length=1, max_length=12, sample_from_top=5, group_size=40
    )
    steps = grow(teacher_url, config)
    queries = queries_of(steps)
    asked = {tuple(q) for q in queries}
    assert len(asked) == len(queries)  # distinct starts and no repeats: nothing asked twice
    answers = {
        tuple(h): a for step in steps for h, a in zip(step.histories, step.answers, strict=True)
    }
    assert all(answer is not None for answer in answers.values())

    finals = [q for q in queries if not any(tuple(q + [x]) in asked for x in ITEM_IDS)]
    assert len(finals) == config.n_sequences
    lengths = [len(f) for f in finals]
    assert min(lengths) == 1 and max(lengths) == 12  # short and long histories both occur
    for final in finals:
        assert len(set(final)) == len(final)  # no item appended twice
        assert set(final) <= set(ITEM_IDS)
        for n in range(1, len(final)):
            assert tuple(final[:n]) in asked  # every prefix is a query
            top = answers[tuple(final[:n])]
            assert top is not None and final[n] in top[: config.sample_from_top]
    assert [len(step.histories) for step in steps] == sorted(
        (len(step.histories) for step in steps), reverse=True
    )  # lockstep: one batch per step, shrinking as sequences reach their length


def test_autoregressive_is_deterministic_per_seed(teacher_url: str) -> None:
    config = AutoregressiveConfig(n_sequences=10, max_length=6, frequency_beta=1.0, seed=3)
    first = queries_of(grow(teacher_url, config))
    assert first == queries_of(grow(teacher_url, config))
    other = AutoregressiveConfig(n_sequences=10, max_length=6, frequency_beta=1.0, seed=4)
    assert first != queries_of(grow(teacher_url, other))


def test_frequency_control_covers_at_least_as_much_of_the_catalogue(teacher_url: str) -> None:
    def coverage(beta: float, seed: int) -> int:
        config = AutoregressiveConfig(
            n_sequences=15,
            min_length=8,
            max_length=15,
            sample_from_top=10,
            frequency_beta=beta,
            seed=seed,
        )
        return len({item for query in queries_of(grow(teacher_url, config)) for item in query})

    plain = [coverage(0.0, seed) for seed in range(2)]
    frequency = [coverage(2.0, seed) for seed in range(2)]
    assert all(f >= p for f, p in zip(frequency, plain, strict=True))
    assert sum(frequency) > sum(plain)


def test_a_failed_answer_stops_only_its_own_sequence() -> None:
    async def ask(histories: list[list[str]]) -> list[list[str] | None]:
        # Sequences starting with an even item fail from their second query on.
        return [
            None if len(h) > 1 and int(h[0][1:]) % 2 == 0 else ITEM_IDS[::-1] for h in histories
        ]

    async def run() -> list[Step]:
        config = AutoregressiveConfig(n_sequences=8, min_length=5, max_length=5, seed=1)
        return [step async for step in autoregressive(config, ITEM_IDS, ask)]

    queries = queries_of(asyncio.run(run()))
    longest = {}
    for query in queries:
        longest[query[0]] = max(longest.get(query[0], 0), len(query))
    assert {start: n for start, n in longest.items() if int(start[1:]) % 2 == 0}
    assert all(n == (2 if int(start[1:]) % 2 == 0 else 5) for start, n in longest.items())


def test_groups_grow_one_after_another_so_a_budget_buys_whole_sequences() -> None:
    async def ask(histories: list[list[str]]) -> list[list[str] | None]:
        return [ITEM_IDS[::-1] for _ in histories]

    async def run(group_size: int) -> list[Step]:
        config = AutoregressiveConfig(
            n_sequences=10, min_length=4, max_length=4, seed=2, group_size=group_size
        )
        return [step async for step in autoregressive(config, ITEM_IDS, ask)]

    steps = asyncio.run(run(3))
    assert [len(step.histories) for step in steps] == [3] * 4 + [3] * 4 + [3] * 4 + [1] * 4
    queries = queries_of(steps)
    starts = [query[0] for query in queries]
    first_of = {start: starts.index(start) for start in starts}
    last_of = {start: len(starts) - 1 - starts[::-1].index(start) for start in starts}
    # Every sequence is asked in full before any sequence of a later group starts.
    groups = [sorted(set(starts[i : i + 12]), key=first_of.get) for i in range(0, 36, 12)]
    for earlier, later in zip(groups, groups[1:], strict=False):
        assert max(last_of[s] for s in earlier) < min(first_of[s] for s in later)
    lockstep = queries_of(asyncio.run(run(10)))
    assert sorted(q for q in queries if len(q) == 1) == sorted(q for q in lockstep if len(q) == 1)
    assert len(queries) == len(lockstep) == 40  # the same starts and lengths, other draws


def test_log_uniform_lengths_favour_short_histories_and_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    config = AutoregressiveConfig(
        n_sequences=5000, min_length=2, max_length=50, lengths="log-uniform"
    )
    lengths = config.draw_lengths(rng)
    assert lengths.min() == 2 and lengths.max() == 50
    assert np.median(lengths) < 15  # uniform would put it near 26


@pytest.mark.parametrize(
    "fields",
    [
        {"n_sequences": 0},
        {"n_sequences": 1, "min_length": 0},
        {"n_sequences": 1, "min_length": 5, "max_length": 4},
        {"n_sequences": 1, "lengths": "zipf"},
        {"n_sequences": 1, "sample_from_top": 0},
        {"n_sequences": 1, "frequency_beta": -1},
        {"n_sequences": 1, "group_size": 0},
    ],
)
def test_autoregressive_config_refuses_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AutoregressiveConfig(**fields)  # type: ignore[arg-type]


def test_random_module_is_not_used_for_draws() -> None:
    """Draws come from the config's seed alone: the global RNG state changes nothing."""

    async def ask(histories: list[list[str]]) -> list[list[str] | None]:
        return [ITEM_IDS[:20] for _ in histories]

    async def run() -> list[list[str]]:
        config = AutoregressiveConfig(n_sequences=6, max_length=8, seed=9)
        return queries_of([step async for step in autoregressive(config, ITEM_IDS, ask)])

    random.seed(1)
    np.random.seed(1)
    first = asyncio.run(run())
    random.seed(2)
    np.random.seed(2)
    assert asyncio.run(run()) == first
