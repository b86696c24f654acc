"""The fine-tuning task: WordNet definition pairs, planted label noise, clean disjoint held-out
synsets, a user's own pairs, and the data folder built once per recipe."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grace_lab import finetune_data
from grace_lab.debian_corpus import WORDNET_DIR, CorpusSourceMissingError
from grace_lab.definitions import (
    PARTS_OF_SPEECH,
    Pair,
    Synset,
    TaskSplit,
    make_definition_task,
    prompt_for,
    read_pairs,
    read_synsets,
    stratum_ids,
    write_pairs,
)
from grace_lab.finetune_data import (
    FinetuneRecipe,
    _add_noise,
    _held_out_total,
    _held_out_with_floor,
    prepare_finetune_data,
)

_EVERY = 25  # the sample of WordNet the task tests run on: every 25th synset (~4,700)


@pytest.fixture(scope="module")
def wordnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real WordNet 3.0 (every 25th synset of each file, licence header kept),
    so that each task draw parses ~4,700 synsets instead of 117,000."""
    files = [WORDNET_DIR / f"data.{name}" for name in ("noun", "verb", "adj", "adv")]
    if not all(f.exists() for f in files):
        pytest.skip(f"WordNet is not installed in {WORDNET_DIR}: apt-get install wordnet-base")
    root = tmp_path_factory.mktemp("wordnet")
    for source in files:
        lines = source.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        header = [line for line in lines if line.startswith("  ")]
        body = [line for line in lines if not line.startswith("  ")]
        (root / source.name).write_text("".join(header + body[::_EVERY]), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def synsets(wordnet: Path) -> dict[str, Synset]:
    return {s.key: s for s in read_synsets(wordnet)}


@pytest.fixture(scope="module")
def split(wordnet: Path) -> TaskSplit:
    return make_definition_task(1500, 300, label_noise=0.2, seed=3, root=wordnet)


def test_read_synsets_refuses_a_folder_without_wordnet(tmp_path: Path) -> None:
    with pytest.raises(CorpusSourceMissingError):
        read_synsets(tmp_path)


def test_synsets_have_clean_lemmas_a_definition_without_examples_and_unique_keys(
    wordnet: Path, synsets: dict[str, Synset]
) -> None:
    parsed = read_synsets(wordnet)
    assert len(parsed) == len(synsets) > 4000  # keys are unique over the four files
    for s in parsed:
        assert s.lemmas
        assert len(set(s.lemmas)) == len(s.lemmas)
        assert all("_" not in lemma and not lemma.endswith(")") for lemma in s.lemmas)
        assert s.definition
        assert '; "' not in s.definition
        assert not s.definition.startswith('"')
        assert 0 <= s.pos < len(PARTS_OF_SPEECH)
    shares = Counter(s.pos for s in parsed)
    assert shares[0] / len(parsed) > 0.5  # nouns dominate
    assert shares[3] / len(parsed) < 0.1  # adverbs are the small stratum


def test_every_lemma_of_a_chosen_synset_makes_one_pair(
    split: TaskSplit, synsets: dict[str, Synset]
) -> None:
    prompts: dict[str, list[str]] = defaultdict(list)
    for pair in split.train:
        prompts[pair.group].append(pair.prompt)
    assert len(prompts) == 1500
    for key, got in prompts.items():
        s = synsets[key]
        assert sorted(got) == sorted(prompt_for(lemma, s.pos) for lemma in s.lemmas)
    assert len(split.train) == sum(len(synsets[k].lemmas) for k in prompts)


def test_clean_pairs_carry_their_synsets_definition_and_noisy_ones_another_synsets(
    split: TaskSplit, synsets: dict[str, Synset]
) -> None:
    keys_by_definition: dict[str, set[str]] = defaultdict(set)
    for key, s in synsets.items():
        keys_by_definition[s.definition].add(key)
    assert any(p.noisy for p in split.train)
    assert not all(p.noisy for p in split.train)
    for pair in split.train:
        own = synsets[pair.group]
        assert pair.stratum == own.pos
        if not pair.noisy:
            assert pair.response == own.definition
        else:
            assert keys_by_definition[pair.response] - {pair.group}  # another synset's


@pytest.mark.parametrize("label_noise", [0.0, 0.2, 0.5])
def test_the_planted_noise_share_is_close_to_label_noise(wordnet: Path, label_noise: float) -> None:
    train = make_definition_task(1500, 100, label_noise=label_noise, seed=1, root=wordnet).train
    share = float(np.mean([p.noisy for p in train]))
    # ~2,600 pairs: the binomial's standard deviation is below 0.01.
    assert share == pytest.approx(label_noise, abs=0.04)
    if label_noise == 0.0:
        assert share == 0.0


def test_held_out_pairs_are_clean_one_per_synset_and_never_from_training(
    split: TaskSplit, synsets: dict[str, Synset]
) -> None:
    held_groups = [p.group for p in split.held_out]
    assert len(split.held_out) == 300
    assert len(set(held_groups)) == 300
    assert not set(held_groups) & {p.group for p in split.train}
    for pair in split.held_out:
        s = synsets[pair.group]
        assert not pair.noisy
        assert pair.response == s.definition
        assert pair.prompt in {prompt_for(lemma, s.pos) for lemma in s.lemmas}


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), train=st.integers(1, 300), held=st.integers(0, 200))
def test_held_out_and_training_synsets_are_disjoint_for_any_seed_and_size(
    wordnet: Path, seed: int, train: int, held: int
) -> None:
    result = make_definition_task(train, held, seed=seed, root=wordnet)
    train_groups = {p.group for p in result.train}
    assert len(train_groups) == train
    assert len(result.held_out) == held
    assert train_groups.isdisjoint(p.group for p in result.held_out)


def test_the_same_seed_gives_the_same_task_and_another_seed_another(wordnet: Path) -> None:
    a = make_definition_task(200, 50, seed=7, root=wordnet)
    b = make_definition_task(200, 50, seed=7, root=wordnet)
    c = make_definition_task(200, 50, seed=8, root=wordnet)
    assert a == b
    assert {p.group for p in a.train} != {p.group for p in c.train}


def test_pos_weights_change_the_stratum_mix(wordnet: Path) -> None:
    def adverb_share(pairs: list[Pair]) -> float:
        groups = {p.group: p.stratum for p in pairs}
        return sum(1 for s in groups.values() if s == 3) / len(groups)

    natural = make_definition_task(300, 100, seed=2, root=wordnet)
    even = make_definition_task(300, 100, seed=2, root=wordnet, pos_weights=(1, 1, 1, 1))
    assert adverb_share(natural.train) < 0.1
    assert adverb_share(even.train) == pytest.approx(0.25, abs=0.1)
    assert adverb_share(even.held_out) == pytest.approx(0.25, abs=0.15)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (1.0, 0.0, 1.0, 1.0), (1, -1, 1, 1)])
def test_pos_weights_need_one_positive_weight_per_part_of_speech(
    wordnet: Path, weights: tuple[float, ...]
) -> None:
    with pytest.raises(ValueError, match="pos_weights"):
        make_definition_task(10, 10, root=wordnet, pos_weights=weights)


@given(
    label_noise=st.one_of(
        st.floats(max_value=-1e-9, allow_nan=False),
        st.floats(min_value=1.0, allow_nan=False),
        st.just(math.nan),
    )
)
def test_a_label_noise_outside_zero_to_one_is_refused_before_any_reading(
    label_noise: float,
) -> None:
    # The check comes first: a folder without WordNet never gets to raise its own error.
    with pytest.raises(ValueError, match="label_noise"):
        make_definition_task(10, 10, label_noise=label_noise, root=Path("/nonexistent"))


def test_asking_for_more_synsets_than_there_are_is_refused(
    wordnet: Path, synsets: dict[str, Synset]
) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        make_definition_task(len(synsets), 1, root=wordnet)
    with pytest.raises(ValueError, match="exceeds"):  # one stratum runs out first
        make_definition_task(len(synsets) // 2, 0, root=wordnet, pos_weights=(1, 1, 1, 1))


# A user's own pairs -------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20)
_pairs = st.lists(
    st.builds(
        Pair,
        prompt=_text,
        response=_text.filter(bool),
        stratum=st.integers(0, 5),
        group=_text,
        noisy=st.booleans(),
    ),
    max_size=8,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example of a property test (tmp_path is per test, not example)."""
    return tmp_path_factory.mktemp("scratch")


@settings(max_examples=30, deadline=None)
@given(pairs=_pairs)
def test_written_pairs_read_back_unchanged(scratch: Path, pairs: list[Pair]) -> None:
    path = scratch / "pairs.jsonl"
    write_pairs(path, pairs)
    assert list(read_pairs(path)) == pairs


def test_read_pairs_fills_stratum_and_group_and_refuses_an_empty_response(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert list(read_pairs(path)) == [Pair("p", "r", 0, "mine.jsonl:1")]
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + '{"prompt": "p"}\n')
    with pytest.raises(ValueError, match=r"mine\.jsonl:2"):
        list(read_pairs(path))


@given(strata=st.lists(st.sampled_from(["noun", "verb", "adverb", "x"]), min_size=1, max_size=12))
def test_string_strata_map_to_sorted_ids_that_name_them_back(strata: list[str]) -> None:
    pairs = [Pair("p", "r", s, str(i)) for i, s in enumerate(strata)]  # type: ignore[arg-type]
    mapped, names = stratum_ids(pairs)
    assert list(names) == sorted(set(strata))
    assert [names[p.stratum] for p in mapped] == strata
    assert [(p.prompt, p.group) for p in mapped] == [(p.prompt, p.group) for p in pairs]


@given(strata=st.lists(st.integers(0, 6), min_size=1, max_size=12))
def test_integer_strata_keep_their_value_and_are_named_by_it(strata: list[int]) -> None:
    pairs = [Pair("p", "r", s, str(i)) for i, s in enumerate(strata)]
    mapped, names = stratum_ids(pairs)
    assert mapped == pairs
    assert names == tuple(str(i) for i in range(max(strata) + 1))


# Label noise on a user's pairs, the held-out floor -------------------------------------------


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 400), share=st.floats(0.0, 0.9), seed=st.integers(0, 1000))
def test_add_noise_gives_a_share_of_rows_another_rows_response(
    n: int, share: float, seed: int
) -> None:
    pairs = [Pair(f"p{i}", f"r{i}", i % 3, f"g{i}") for i in range(n)]
    noisy = _add_noise(pairs, share, seed)
    assert len(noisy) == n
    for before, after in zip(pairs, noisy, strict=True):
        assert (after.prompt, after.stratum, after.group) == (
            before.prompt,
            before.stratum,
            before.group,
        )
        if after.noisy:
            assert after.response != before.response  # another row's, never its own
            assert after.response in {p.response for p in pairs}
        else:
            assert after == before
    assert _add_noise(pairs, share, seed) == noisy  # seeded


def test_add_noise_plants_close_to_its_share() -> None:
    pairs = [Pair(f"p{i}", f"r{i}", 0, f"g{i}") for i in range(4000)]
    share = float(np.mean([p.noisy for p in _add_noise(pairs, 0.3, 0)]))
    assert share == pytest.approx(0.3, abs=0.03)


def test_add_noise_on_a_single_row_leaves_it_clean() -> None:
    [pair] = _add_noise([Pair("p", "r", 0, "g")], 0.99, 0)
    assert pair.response == "r"


def _pool(strata: list[int]) -> list[Pair]:
    return [Pair(f"p{i}", f"r{i}", s, f"g{i}") for i, s in enumerate(strata)]


@given(
    strata=st.lists(st.integers(0, len(PARTS_OF_SPEECH) - 1), max_size=200),
    head=st.integers(0, 60),
    floor=st.integers(0, 20),
)
def test_the_held_out_floor_tops_up_small_strata_from_the_rest_of_the_pool(
    strata: list[int], head: int, floor: int
) -> None:
    pool = _pool(strata)
    recipe = FinetuneRecipe(held_out_pairs=head, held_out_floor=floor)
    chosen = _held_out_with_floor(pool, recipe)
    assert chosen[: min(head, len(pool))] == pool[:head]
    assert len({p.group for p in chosen}) == len(chosen)  # no pair twice
    assert {p.group for p in chosen} <= {p.group for p in pool}
    have = Counter(p.stratum for p in chosen)
    first = Counter(p.stratum for p in pool[:head])
    available = Counter(strata)
    for s in range(len(PARTS_OF_SPEECH)):
        # At least the floor where the pool has enough, and no more than the floor needs.
        assert have[s] >= min(floor, available[s])
        assert have[s] == max(first[s], min(floor, available[s]))


def test_the_held_out_draw_leaves_room_for_the_floor() -> None:
    recipe = FinetuneRecipe(held_out_pairs=600, held_out_floor=100)
    assert _held_out_total(recipe) >= 600 + len(PARTS_OF_SPEECH) * 100


# The data folder, built once per recipe -------------------------------------------------------

_GENERAL = [
    "In the beginning God created the heaven and the earth.",
    "A fortune is a short saying, and a saying is a short fortune.",
    "The quick brown fox jumps over the lazy dog again and again.",
] * 20


def _user_files(tmp_path: Path) -> tuple[Path, Path]:
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    rows = [
        {"prompt": f"define word{i} ({s}):", "response": f"the meaning number {i}", "stratum": s}
        for i, s in enumerate(["noun", "verb", "noun", "adverb"] * 6)
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[20:]))
    return train, held


def test_prepare_builds_pair_datasets_and_reuses_them_while_the_recipe_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []

    def general(documents: int, seed: int) -> list[str]:
        built.append(documents)
        return _GENERAL

    monkeypatch.setattr(finetune_data, "_general_corpus", general)
    train, held = _user_files(tmp_path)
    recipe = FinetuneRecipe(
        jsonl=str(train),
        held_out_jsonl=str(held),
        label_noise=0.25,
        vocab_size=300,
        max_tokens=12,
        pretrain_documents=60,
    )
    work = tmp_path / "work"
    data = prepare_finetune_data(work, recipe)
    assert built == [60]
    assert (len(data.train), len(data.held_out)) == (20, 4)
    assert data.stratum_names == ("adverb", "noun", "verb")
    assert data.train_strata.tolist() == [1, 2, 1, 0] * 5
    assert data.stratum_shares.sum() == pytest.approx(1.0)
    assert data.groups.tolist() == list(range(20))  # each user row is its own group
    # The planted noise is the report's: flagged where the text file says so.
    flagged = [json.loads(line)["noisy"] for line in (work / "train.jsonl").open()]
    assert data.noisy.tolist() == flagged
    # Only the response counts: every sample's target start is past its prompt.
    starts, lengths = data.train.target_starts, data.train.lengths
    assert starts is not None
    assert bool(((starts >= 1) & (starts < lengths)).all())
    assert int(lengths.max()) <= 12

    again = prepare_finetune_data(work, recipe)
    assert built == [60]  # reused, not rebuilt
    assert again.noisy.tolist() == data.noisy.tolist()

    prepare_finetune_data(work, replace(recipe, label_noise=0.0))
    assert built == [60, 60]  # another recipe: rebuilt


def test_user_pairs_need_held_out_pairs(tmp_path: Path) -> None:
    train, _ = _user_files(tmp_path)
    with pytest.raises(ValueError, match="held-out"):
        finetune_data._pairs(FinetuneRecipe(jsonl=str(train)))
