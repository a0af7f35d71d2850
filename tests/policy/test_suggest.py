""" "Did you mean" does bounded work per word and still finds a typo among many names."""

from __future__ import annotations

import difflib
import random

import pytest

from convergent.errors import PolicyError
from convergent.policy import load_policy_text
from convergent.policy.suggest import LIMIT, Suggester


def _typos(name: str, rng: random.Random) -> list[str]:
    """One of each kind of one-edit typo, somewhere in the part after ``prefix[``."""
    i = rng.randrange(name.index("[") + 1, len(name) - 2)
    return [
        name[:i] + "Q" + name[i + 1 :],  # a character changed
        name[:i] + name[i + 1 :],  # one left out
        name[:i] + "q" + name[i:],  # one added
        name[:i] + name[i + 1] + name[i] + name[i + 2 :],  # two swapped
    ]


def _names(count: int) -> list[str]:
    return [f"file[/srv/www/site{i:05d}/index.html]" for i in range(count)]


def test_each_word_is_compared_with_at_most_the_candidate_limit() -> None:
    names = _names(20_000)
    suggester = Suggester(names)
    rng = random.Random(1)
    words = [typo for name in rng.sample(names, 200) for typo in _typos(name, rng)]
    words += ["", "x", "file[", "]" * 50, "file[/srv/www/site" + "9" * 60 + "]"]
    for word in words:
        assert len(suggester.shortlist(word)) <= LIMIT


def test_a_small_set_of_candidates_gets_exactly_difflibs_answer() -> None:
    names = _names(LIMIT)
    rng = random.Random(2)
    for name in rng.sample(names, 20):
        for typo in _typos(name, rng):
            expected = difflib.get_close_matches(typo, names, n=1)
            assert Suggester(names).hint(typo) == f" (did you mean '{expected[0]}'?)"


def _words(count: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [f"file[/etc/{''.join(rng.choices(letters, k=8))}.conf]" for _ in range(count)]


@pytest.mark.parametrize("count", [300, 5_000, 50_000])
def test_a_typo_in_one_name_is_found_among_many(count: int) -> None:
    rng = random.Random(count)
    names = _words(count, rng)
    suggester = Suggester(names)
    for name in rng.sample(names, 50):
        for typo in _typos(name, rng):
            assert suggester.hint(typo) == f" (did you mean '{name}'?)", typo


def test_among_many_similar_names_the_suggestion_is_as_close_as_difflibs() -> None:
    names = _names(5_000)
    suggester = Suggester(names)
    rng = random.Random(3)

    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a, b).ratio()

    for name in rng.sample(names, 3):
        for typo in _typos(name, rng):
            best = difflib.get_close_matches(typo, names, n=1)[0]
            found = suggester.hint(typo).split("'")[1]
            assert ratio(typo, found) == ratio(typo, best), (typo, found, best)


@pytest.mark.timeout(120)
def test_five_thousand_missing_references_give_five_thousand_problems() -> None:
    lines = ["resources:"]
    for i in range(5_000):
        lines += [f"  - noop: n{i:04d}", f'    require: ["noop[m{i:04d}]"]']
    with pytest.raises(PolicyError) as caught:
        load_policy_text("\n".join(lines) + "\n", "many.yaml")
    problems = caught.value.problems
    assert len(problems) == 5_000
    assert str(problems[0]) == (
        "many.yaml:3:15: noop[n0000]: require: no resource noop[m0000] in this policy "
        "(did you mean 'noop[n0000]'?)"
    )
