"""What the page shows for a given service answer: pure formatting, no server, no browser."""

from __future__ import annotations

import gradio as gr

from app.ui.formatting import (
    axis_values,
    counts_text,
    history_frame,
    progress_text,
    quick_label,
    quick_scores,
    rater_badge,
    recent_rows,
    status_text,
    steps_caption,
    trained_share_text,
    version_frame,
)
from app.ui.rate_tab import RateTab
from app.views import Assignment, HistoryPoint, NextResult, Progress, RaterView, RatingRow, VersionScore

MARKUP = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_quick_scores_span_the_service_range_and_say_what_they_send() -> None:
    assert quick_scores(-1.0, 1.0) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert quick_scores(0.0, 10.0) == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert quick_label(0, -1.0) == "1 · Bad (-1)" and quick_label(4, 1.0) == "5 · Great (+1)"


def test_names_and_notices_in_markdown_slots_are_escaped() -> None:
    badge = rater_badge(RaterView(1, MARKUP + "**x**", False))
    assert "<img" not in badge and "<script" not in badge and "**x**" not in badge and "&lt;img" in badge
    status = status_text(MARKUP, MARKUP)
    assert "<img" not in status and "<script" not in status
    assert rater_badge(None) == "Not signed in"


def test_an_empty_buffer_says_so_and_polls_instead_of_freezing() -> None:
    with gr.Blocks():
        controls = [gr.Button(), gr.Button()]
        tab = RateTab(gr.State(), gr.Textbox(), gr.Textbox(), gr.Markdown(), gr.Markdown(), gr.Markdown(),
                      gr.Button(), gr.Timer(active=False), gr.Slider(), controls)  # fmt: skip
    waiting = "Nothing for you to rate right now: model v2 is writing new responses"
    sample, prompt, response, version, status, progress, undo, poll, slider, *buttons = tab.show(
        NextResult(None, waiting, Progress(rated=5, skipped=1, can_undo=True), "Rating saved"), middle=0.0
    )
    assert slider == 0.0 and len(buttons) == 2 and all(b.interactive is False for b in buttons)
    assert status.index("Rating saved") < status.index("\n") < status.index(waiting), "two lines, notice first"
    assert sample is None and prompt == "" and response.value == "" and response.placeholder == waiting
    assert waiting in status and "Rating saved" in status
    assert poll.active is True, "the 1 s poll runs while nothing is ready"
    assert progress == progress_text(Progress(5, 1, True)) == "**5** rated · 1 skipped"
    assert undo.interactive is True

    a = Assignment(sample_id=7, prompt="Hi", response=MARKUP, policy_version=3)
    sample, prompt, response, version, status, progress, undo, poll, slider, *buttons = tab.show(
        NextResult(a, None, Progress(0, 0, False), None), middle=0.0
    )
    assert all(b.interactive is True for b in buttons), "a response to rate: the score buttons work"
    assert (sample, prompt, response.value) == (7, "Hi", MARKUP), "model output goes to a Textbox as is"
    assert "v3" in version and response.label == "Response · model v3"
    assert poll.active is False and undo.interactive is False


def test_counts_plots_and_recent_rows() -> None:
    text = counts_text({"unrated": 3, "scored": 2, "trained": 8, "raters": 2, "human_ratings": 9})
    assert text.startswith("Samples: unrated **3** · scored **2** · trained **8**") and "raters 2" in text
    points = [HistoryPoint(1, 1, 0.5, 0.01, -0.1, 0.3, "t"), HistoryPoint(2, 2, 0.7, 0.02, -0.2, 0.2, "t")]
    frame = history_frame(points, "mean_score")
    assert frame["step"].tolist() == ["1", "2"] and frame["value"].tolist() == [0.5, 0.7]
    assert history_frame([], "kl").empty
    assert steps_caption([]) == "No PPO steps yet."
    assert steps_caption(points) == (
        "2 PPO steps · latest version v2: mean score 0.7 · kl to reference (k3, never negative) 0.02 · "
        "policy loss -0.2 · value loss 0.2"
    )
    row = RatingRow("2026-01-02 03:04:05", "ann", "human", 0.25, 4, "p" * 300, MARKUP)
    assert recent_rows([row])[0][:5] == ["03:04:05", "ann", "human", 0.25, "v4"]
    assert len(str(recent_rows([row])[0][5])) == 160 and recent_rows([row])[0][6] == MARKUP


def test_the_share_of_human_ratings_trained_is_in_the_counts_block() -> None:
    assert trained_share_text(3, 8) == "**3** of 8 human ratings trained (38%)"
    assert trained_share_text(0, 0) == "**0** of 0 human ratings trained (—)"
    counts = {"unrated": 1, "scored": 0, "trained": 4, "human_ratings_trained": 2, "human_ratings_all": 3}
    lines = counts_text(counts).split("  \n")
    assert lines[1] == "**2** of 3 human ratings trained (67%)", "on its own line, under the sample lifecycle"
    assert "human ratings trained" not in counts_text({"unrated": 1})


def test_whole_number_axes_never_get_fractional_ticks() -> None:
    # A few points: text categories (no 1.5 tick can exist) that sort as text in numeric order: " 9" < "10".
    steps = list(range(1, 12))
    labels = axis_values(steps)
    assert labels[0] == " 1" and labels[-1] == "11" and [x.strip() for x in labels] == [str(x) for x in steps]
    assert sorted(labels) == labels
    many = axis_values(list(range(1, 121)))
    assert sorted(many) == many and many[-1] == "120" and many[8] == "  9"
    assert axis_values([]) == []


def test_the_per_version_plot_has_one_point_per_rated_version() -> None:
    frame = version_frame([VersionScore(0, -0.25, 4), VersionScore(2, 0.5, 1)])
    assert frame["version"].tolist() == ["0", "2"] and frame["mean score"].tolist() == [-0.25, 0.5]
    assert frame["ratings"].tolist() == [4, 1]
    assert version_frame([]).empty
