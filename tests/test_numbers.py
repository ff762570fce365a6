"""The one way numbers are printed: the model screen, `retrain` and `evaluate` all call it."""

from wsireview.numbers import change_text, metric_text, rounded_change


def test_a_change_that_rounds_to_nothing_is_never_negative_zero():
    assert change_text(-0.0004) == "+0.000" and rounded_change(-0.0004) == 0.0
    assert change_text(-0.3, whole=True) == "+0"
    assert change_text(-0.1004) == "-0.100" and change_text(3.0, whole=True) == "+3"


def test_metrics_print_three_decimals_counts_whole_and_none_as_a_dash():
    assert [metric_text(v) for v in (0.91234, 4, None)] == ["0.912", "4", "-"]
