from coupa_d365_pipeline.common.markdown import cell, table
from coupa_d365_pipeline.sync.report import Action, Outcome, SyncReport


def test_cells_escape_bars_and_flatten_line_breaks_the_same_way_everywhere():
    assert cell("a|b\r\nc\nd\re") == "a\\|b c d e"
    assert cell(None) == "" and cell(42) == "42"
    assert cell("x|" * 10, max_chars=3) == "x\\|x"


def test_table_limits_rows_and_says_how_many_more():
    text = table(("id", "reason"), [(1, "a|b"), (2, "c\nd"), (3, "e")], limit=2)
    assert text.splitlines() == ["| id | reason |", "|---|---|", "| 1 | a\\|b |", "| 2 | c d |", "| … | 1 more |"]
    assert table(("id",), [], empty="Nothing.") == "Nothing."


def test_problems_markdown_escapes_document_and_reason_alike():
    report = SyncReport(
        [
            Outcome("invoice", 7, "quarantined", "INV|1", "usmf", "bad | value\nsecond line"),
            Outcome("invoice", 8, Action.CREATED, "INV-2", "usmf"),
        ]
    )
    assert (
        report.problems_markdown().splitlines()[2] == "| 7 | INV\\|1 | usmf | quarantined | bad \\| value second line |"
    )
    assert SyncReport().problems_markdown() == "No problems."


def test_outcome_vocabulary_keeps_its_words():
    counts = SyncReport([Outcome("po", 1, "void_blocked_posted"), Outcome("po", 2, Action.BUSY)]).metadata_counts("po")
    assert list(counts) == [
        "created",
        "updated",
        "already_present",
        "repaired",
        "quarantined",
        "failed",
        "voided",
        "void_blocked_posted",
        "changed_after_post",
        "cancelled",
        "closed",
        "change_blocked",
        "busy",
        "skipped",
    ]
    assert counts["void_blocked_posted"] == 1 and counts["busy"] == 1
    assert Outcome("po", 1, "busy").action is Action.BUSY and f"{Action.BUSY}" == "busy"
