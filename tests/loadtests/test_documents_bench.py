"""The document-marking benchmark's figures are right, on a small corpus: the scores are the
counts against the truth, a detector that misses or over-counts is caught, the prompts it
times are of the size it says, and the report names the command that made it."""

from __future__ import annotations

from civicmeter.gateway import DOCUMENT_MARKINGS, detect_document_markings
from loadtests.documents.bench import (
    PROMPT_BYTES,
    TARGET_PRECISION,
    TARGET_RECALL,
    Latency,
    latency,
    prompts_of_size,
    report,
    score,
)
from loadtests.documents.corpus import Document, generate
from loadtests.pii.bench import Speed

DOCS = generate(1500, seed=11)


def test_every_class_meets_the_target_on_a_small_corpus() -> None:
    # The full measurement is `python -m loadtests.documents.bench`; this guards regressions.
    scores = score(DOCS)
    assert list(scores) == list(DOCUMENT_MARKINGS)
    for cls, s in scores.items():
        assert s.tp >= 40, cls
        assert s.precision >= TARGET_PRECISION, cls
        assert s.recall >= TARGET_RECALL, cls
        assert s.positives == sum(doc.truth.get(cls, 0) for doc in DOCS)
        assert s.documents == sum(1 for doc in DOCS if doc.truth.get(cls, 0))


def test_the_scores_are_counts_against_the_truth() -> None:
    docs = [
        Document("x", {"confidential": 2, "approval_block": 1}, "official"),
        Document("y", {}, "news"),
    ]
    answers = {"x": {"confidential": 3}, "y": {"document_number": 1}}
    scores = score(docs, answers.__getitem__)
    assert (scores["confidential"].tp, scores["confidential"].fp) == (2, 1)
    assert (scores["approval_block"].tp, scores["approval_block"].fn) == (0, 1)
    assert (scores["document_number"].tp, scores["document_number"].fp) == (0, 1)
    assert scores["confidential"].precision == 2 / 3
    assert scores["approval_block"].recall == 0.0


def test_a_detector_that_misses_a_class_or_counts_twice_is_caught() -> None:
    def blind(text: str) -> dict[str, int]:
        found = detect_document_markings(text)
        found.pop("approval_block", None)
        return found

    def double(text: str) -> dict[str, int]:
        return {cls: 2 * count for cls, count in detect_document_markings(text).items()}

    assert score(DOCS, blind)["approval_block"].recall == 0.0
    assert score(DOCS, blind)["confidential"].recall >= TARGET_RECALL
    doubled = score(DOCS, double)
    assert all(s.precision < TARGET_PRECISION for s in doubled.values())


def test_the_timed_prompts_are_of_the_stated_size_and_hold_every_document() -> None:
    prompts = prompts_of_size(DOCS, PROMPT_BYTES)
    assert prompts
    assert all(len(prompt.encode()) >= PROMPT_BYTES - 2 for prompt in prompts)
    longest = max(len(doc.text.encode()) for doc in DOCS)
    assert all(len(prompt.encode()) < PROMPT_BYTES + longest + 2 for prompt in prompts)
    joined = "\n\n".join(prompts)
    assert all(doc.text in joined for doc in DOCS[:50])


def test_latency_percentiles_are_ordered() -> None:
    timing = latency(prompts_of_size(DOCS[:300], PROMPT_BYTES), runs=1)
    assert timing.prompts > 0
    assert 0 < timing.cpu_p50 <= timing.cpu_p99
    assert 0 < timing.wall_p50 <= timing.wall_p99


def test_the_report_names_the_command_and_every_class() -> None:
    scores = score(DOCS[:200])
    speed = Speed(megabytes=1.0, wall_seconds=0.5, cpu_seconds=0.25)
    text = report(
        DOCS[:200],
        scores,
        {"the corpus": speed},
        Latency(10, 100.0, 200.0, 110.0, 900.0),
        command="python -m loadtests.documents.bench --docs 200",
        seed=11,
        runs=1,
        load="1.0 / 1.0 / 1.0",
    )
    assert "python -m loadtests.documents.bench --docs 200" in text
    for cls in DOCUMENT_MARKINGS:
        assert f"| `{cls}` |" in text
    assert "| the corpus | 1.0 | 4.0 | 2.0 |" in text
    assert "p99 200 µs" in text
